"""``launch_k3s(profile, runner=...)`` → :class:`K3sCluster`, a kubectl-like handle on a running k3s.

Order of a launch (each step undone by ``stop()``, also on exceptions and KeyboardInterrupt):
validate profile + flags → find k3s (``K3sBinaryMissing`` before anything starts) → runner →
tagged state record → scratch tmpfs for the paths k3s writes outside its data dir → profile
workarounds (which contribute flags, env, PATH and wrappers such as the interceptor) →
``runner.spawn`` of ``k3s server`` → readiness stages with timings.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._state import Record, new_id
from ..errors import InvalidParameter, K3sError, UsageError
from ..report import Rich, render
from . import _inrunner
from .binary import K3sBinary, find_k3s
from .profiles import STAGES, Profile, get_profile, validate_flags, validate_stage

if TYPE_CHECKING:
    from ..runners.base import Runner
    from ..workarounds import LaunchPlan, Workaround, WorkaroundResult


@dataclass
class StageResult:
    stage: str
    reached: bool = False
    seconds: float | None = None
    detail: str = ""


@dataclass(repr=False)
class Readiness(Rich):
    """Which readiness stage was reached and how long each took (seconds since spawn)."""

    stages: dict[str, StageResult] = field(default_factory=lambda: {s: StageResult(s) for s in STAGES})
    target: str = "readyz"
    exited: int | None = None

    _title_text = "k3s readiness"

    @property
    def reached(self) -> str | None:
        last = None
        for s in STAGES:
            if self.stages[s].reached:
                last = s
        return last

    @property
    def ok(self) -> bool:
        return self.stages[self.target].reached

    def summary(self) -> dict[str, Any]:
        return {"reached": self.reached, "target": self.target, "ok": self.ok, "exit_code": self.exited}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{"stage": r.stage, "reached": r.reached, "seconds": r.seconds, "detail": r.detail}
                             for r in self.stages.values()])

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "stages": self.to_frame().to_dict(orient="records")}


def _cluster_dir(runner: Runner, cid: str) -> Path:
    d = Path(runner.workdir) / cid
    d.mkdir(parents=True, exist_ok=True)
    return d


class K3sCluster(Rich):
    """A k3s server started by :func:`launch_k3s`. Use as a context manager or call ``stop()``."""

    _title_text = "k3s cluster"

    def __init__(self, profile: Profile, runner: Runner, *, own_runner: bool, binary: K3sBinary,
                 data_dir: str | None, extra_flags: list[str], skip: Sequence[str], add: Sequence[str],
                 params: dict[str, dict[str, Any]], target: str, host: bool, keep_log: str | None) -> None:
        from ..workarounds import get_workaround

        self.id = new_id("k3s-")
        self.profile = profile
        self.runner = runner
        self.own_runner = own_runner
        self.binary = binary
        self.version = binary.version
        self.extra_flags = extra_flags
        self.target = target
        self.host = host
        self.keep_log = keep_log
        wids = [w for w in profile.workarounds if w not in skip] + [w for w in add if w not in profile.workarounds]
        self.workarounds: list[Workaround] = [get_workaround(w, **params.get(w, {})) for w in wids]
        self._data_dir_arg = data_dir
        self.results: list[WorkaroundResult] = []
        self.readiness = Readiness(target=target)
        self.plan: LaunchPlan | None = None
        self.proc = None
        self.record: Record | None = None
        self.dir: Path | None = None
        self.command: list[str] = []
        self._scratch: dict[str, Any] | None = None
        self._t0: float | None = None
        self._final_log: str | None = None
        self._monitor = None
        self.stopped = False

    # -- paths ------------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "k3s.log"

    @property
    def kubeconfig(self) -> Path:
        assert self.dir is not None
        return self.dir / "kubeconfig.yaml"

    @property
    def data_dir(self) -> str:
        assert self.plan is not None
        return self.plan.data_dir

    # -- launch ------------------------------------------------------------------------------------
    def _start(self) -> K3sCluster:
        from ..workarounds import LaunchPlan

        r = self.runner
        if self.own_runner:
            r.start()
        self.dir = _cluster_dir(r, self.id)
        data_dir = self._data_dir_arg or str(self.dir / "data")
        self.plan = LaunchPlan(data_dir=data_dir, work_dir=str(self.dir / "workarounds"))
        Path(self.plan.work_dir).mkdir(parents=True, exist_ok=True)
        self.record = Record(kind="k3s", id=self.id, paths=[str(self.dir)], note=str(self.dir / "cluster.json")).save()
        self._write_info("starting")
        scratch = list(_inrunner.AGENT_SCRATCH if self.profile.agent else _inrunner.SERVER_SCRATCH)
        self._scratch = r.run_python(_inrunner.scratch_apply, scratch, f"/tmp/{self.id}-scratch", timeout=60)
        if not self._scratch["ok"]:
            raise K3sError(f"could not prepare scratch mounts in the runner: {self._scratch['errors']}",
                           hint="the runner needs CAP_SYS_ADMIN (root Host runner, GVisor with caps)")
        for w in self.workarounds:
            self.results.append(w.apply(r, self.plan))
        binary = self._binary_in_runner()
        flags = [f"--data-dir={data_dir}", f"--write-kubeconfig={self.kubeconfig}"]
        flags += [f for f in self.plan.flags if f not in flags] + [f for f in self.profile.flags if f not in self.plan.flags]
        flags += [f for f in self.extra_flags if f not in flags]
        self.command = self.plan.command([binary, "server", *flags])
        env = self.plan.environment()
        self._write_info("spawning")
        self._t0 = time.monotonic()
        self.proc = r.spawn(self.command, stdout=self.log_path, stderr=self.log_path, env=env)
        self._record_pids()
        self._write_info("running")
        return self

    def _binary_in_runner(self) -> str:
        """The k3s path as the runner sees it; copied into the cluster dir when not visible there
        (e.g. a binary under /tmp is hidden by gVisor's /tmp tmpfs)."""
        path = str(self.binary.path)
        res = self.runner.run(["/bin/sh", "-c", f'test -x "{path}"'])
        if res.ok:
            return path
        dst = self.dir / "bin" / "k3s"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.binary.path, dst)
        return str(dst)

    def _record_pids(self) -> None:
        pids = [p for p in (getattr(getattr(self.proc, "popen", None), "pid", None),
                            getattr(getattr(self.proc, "client", None), "pid", None)) if p]
        if self.record is not None:
            self.record.pids = pids
            self.record.save()

    def _write_info(self, state: str) -> None:
        if self.dir is None:
            return
        info = {
            "id": self.id, "state": state, "profile": self.profile.name, "runner": self.runner.kind,
            "runner_info": _safe(self.runner.info), "k3s": self.version.to_dict(), "binary": str(self.binary.path),
            "binary_source": self.binary.source, "data_dir": self.plan.data_dir if self.plan else None,
            "log": str(self.log_path), "kubeconfig": str(self.kubeconfig), "command": self.command,
            "workarounds": [w.id for w in self.workarounds], "readiness": self.readiness.to_dict()["stages"],
            "pid": os.getpid(), "time": time.time(),
        }
        tmp = self.dir / "cluster.json.tmp"
        tmp.write_text(json.dumps(info, default=str, indent=1))
        os.replace(tmp, self.dir / "cluster.json")

    # -- readiness -----------------------------------------------------------------------------------
    def _mark(self, stage: str, detail: str = "") -> None:
        s = self.readiness.stages[stage]
        if not s.reached:
            s.reached, s.seconds, s.detail = True, round(time.monotonic() - (self._t0 or 0), 2), detail

    def _probe_api(self, nodes: bool) -> dict[str, Any]:
        return self.runner.run_python(_inrunner.api_probe, str(self.kubeconfig), nodes, 5.0, timeout=60)

    def poll_readiness(self) -> Readiness:
        """One readiness check (no waiting); updates and returns ``self.readiness``."""
        if self.proc is None:
            return self.readiness
        rc = self.proc.poll()
        if rc is not None:
            self.readiness.exited = rc
            return self.readiness
        self._mark("process", "k3s process running")
        if self.kubeconfig.exists():
            self._mark("kubeconfig", str(self.kubeconfig))
        else:
            return self.readiness
        want_nodes = self.profile.agent
        res = self._probe_api(want_nodes)
        if res.get("readyz"):
            self._mark("readyz", res.get("readyz_body", ""))
        if want_nodes and res.get("nodes"):
            self._mark("node-registered", ", ".join(n["name"] for n in res["nodes"]))
            ready = [n["name"] for n in res["nodes"] if n["ready"]]
            if ready:
                self._mark("node-ready", ", ".join(ready))
        self._last_probe = res
        return self.readiness

    def wait(self, stage: str | None = None, timeout: float = 180.0, interval: float = 2.0) -> Readiness:
        """Wait until ``stage`` (default: the profile's target) is reached, k3s exits, or timeout.

        Never raises for "not reached": inspect ``.readiness`` (or call ``check()``).
        """
        stage = validate_stage(stage or self.target)
        deadline = time.monotonic() + timeout
        while True:
            self.poll_readiness()
            if self.readiness.stages[stage].reached or self.readiness.exited is not None:
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        self._write_info("running" if self.alive() else "exited")
        return self.readiness

    def check(self) -> K3sCluster:
        """Raise K3sError naming the stage reached and the blockers found when the target was missed."""
        if not self.readiness.ok:
            found = ""
            with contextlib.suppress(Exception):
                c = self.classify()
                found = f"; signatures: {', '.join(c.to_frame()['id'].astype(str).unique()[:8])}"
            raise K3sError(
                f"k3s ({self.profile.name}) reached {self.readiness.reached or 'nothing'}, not {self.readiness.target}"
                + (f"; exited {self.readiness.exited}" if self.readiness.exited is not None else "") + found,
                hint="see cluster.logs() and cluster.classify()", log=str(self.log_path),
            )
        return self

    # -- observation ----------------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self, tail: int | None = 50) -> str:
        """The last ``tail`` lines of the k3s log (all with ``tail=None``)."""
        if self._final_log is not None:
            text = self._final_log
        else:
            try:
                text = self.log_path.read_text(errors="replace")
            except (OSError, AssertionError):
                text = ""
        lines = text.splitlines()
        return "\n".join(lines if tail is None else lines[-tail:])

    def follow(self, interval: float = 0.5, timeout: float | None = None) -> Iterator[str]:
        """Yield new log lines as they are written, until k3s exits (or ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with open(self.log_path, errors="replace") as f:
            buf = ""
            while True:
                chunk = f.read()
                if chunk:
                    buf += chunk
                    *lines, buf = buf.split("\n")
                    yield from lines
                elif not self.alive() or (deadline and time.monotonic() > deadline):
                    if buf:
                        yield buf
                    return
                else:
                    time.sleep(interval)

    def classify(self):
        """Blocker/progress signatures in the log (k3snb.signatures)."""
        from ..signatures import classify

        return classify(self.logs(tail=None))

    def monitor(self, interval: float = 2.0, **kw: Any):
        """Start (once) and return a psutil sampler of k3s's process tree (k3snb.monitor)."""
        from ..monitoring import monitor

        if self._monitor is None:
            self._monitor = monitor(self, interval=interval, **kw)
        return self._monitor

    def watch(self, **kw: Any):
        """Live view of this k3s: process tree, CPU/memory sparklines, the latest classified log lines,
        refreshed every second until the cell is interrupted (a static snapshot without a front end).
        Keywords go to :func:`k3snb.monitoring.watch` (interval, duration, lines, live)."""
        from ..monitoring import watch

        return watch(self, log=kw.pop("log", self.log_path), title=kw.pop("title", f"k3s {self.profile.name}"), **kw)

    def root_pids(self) -> list[int]:
        """Host pids whose process trees hold this k3s (the spawn client; for gVisor the sandbox)."""
        pids = []
        p = getattr(getattr(self.proc, "popen", None), "pid", None)
        if p:
            pids.append(p)
        with contextlib.suppress(Exception):
            pids += self.runner.sandbox_pids()
        return pids

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id, "profile": self.profile.name, "runner": self.runner.kind,
            "k3s": self.version.version, "alive": self.alive(), "stopped": self.stopped,
            "reached": self.readiness.reached, "target": self.target,
            "exit_code": self.proc.poll() if self.proc else None,
            "uptime_s": round(time.monotonic() - self._t0, 1) if self._t0 and not self.stopped else None,
            "data_dir": self.plan.data_dir if self.plan else None, "log": str(self.log_path) if self.dir else None,
            "kubeconfig": str(self.kubeconfig) if self.dir else None,
        }

    summary = status

    def to_frame(self):
        return self.readiness.to_frame()

    def workaround_frame(self):
        import pandas as pd

        return pd.concat([r.to_frame() for r in self.results], ignore_index=True) if self.results else pd.DataFrame()

    def info(self) -> dict[str, Any]:
        """Facts recorded with every run: k3s version, runner, flags, workarounds, stages."""
        return {"k3s": self.version.to_dict(), "binary_source": self.binary.source, "profile": self.profile.name,
                "runner": _safe(self.runner.info), "command": self.command,
                "workarounds": [w.id for w in self.workarounds], "readiness": self.readiness.to_dict()}

    def _repr_text(self) -> str:
        s = self.status()
        return (f"<K3sCluster {s['profile']} k3s {s['k3s']} on {s['runner']} "
                f"{'alive' if s['alive'] else 'stopped'} reached={s['reached']}>")

    def _repr_html_(self) -> str:
        return render(f"k3s {self.version.version} — profile {self.profile.name}", self.status(),
                      [("readiness", self.readiness.to_frame()), ("command", shlex.join(self.command)),
                       ("log tail", self.logs(tail=30))], text=self._repr_text())

    # -- cluster operations (run where the API is reachable: inside the runner) ---------------------
    def apply_manifests(self, docs: list[dict] | str, namespace: str = "default"):
        """Create objects from manifest dicts (or a YAML string) through the kubernetes client."""
        import pandas as pd
        import yaml

        if isinstance(docs, str):
            docs = [d for d in yaml.safe_load_all(docs) if d]
        rows = self.runner.run_python(_inrunner.apply_manifests, str(self.kubeconfig), list(docs), namespace,
                                      timeout=120)
        return pd.DataFrame(rows)

    def client(self):
        """A ``kubernetes`` ApiClient for this cluster, usable where the API is reachable from this
        process (the Host runner shares the host's network); gVisor keeps it inside the sandbox."""
        if not self.runner.capabilities.shares_host_network:
            raise K3sError("the API server listens inside the sandbox's network namespace",
                           hint="use cluster.objects() / cluster.apply_manifests(), which run inside the runner")
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def objects(self, namespace: str = "default") -> dict[str, Any]:
        return self.runner.run_python(_inrunner.list_objects, str(self.kubeconfig), namespace, timeout=60)

    # -- teardown ------------------------------------------------------------------------------------
    def stop(self, grace: float = 15.0) -> dict[str, Any]:
        """End k3s and every child (containerd, shims), undo mounts and workarounds. Idempotent."""
        if self.stopped:
            return {"ok": True, "note": "already stopped"}
        self.stopped = True
        report: dict[str, Any] = {"errors": []}
        r = self.runner

        def step(name, fn):
            try:
                report[name] = fn()
            except BaseException as e:  # noqa: BLE001 - finish the teardown, report errors
                report["errors"].append(f"{name}: {type(e).__name__}: {e}")
                if isinstance(e, KeyboardInterrupt):
                    report["interrupted"] = True

        if self._monitor is not None:
            step("monitor", self._monitor.stop)
        if self.proc is not None:
            step("terminate", lambda: self.proc.terminate(grace))
        runner_ok = r.alive() if hasattr(r, "alive") else True
        needles = [str(self.dir)] + ([self.plan.data_dir] if self.plan else [])
        if r.capabilities.private_pids:
            needles.append("/run/k3s/containerd")  # shims; safe only inside the runner's own pid ns
        if runner_ok and self.dir is not None:
            step("kill", lambda: r.run_python(_ops_kill, needles, [], timeout=60))
        if runner_ok:
            for w in reversed(self.workarounds):
                if w.applied:
                    step(f"revert:{w.id}", lambda w=w: w.revert(r).ok)
            if self.dir is not None:  # whatever k3s/kubelet/containerd mounted below its dirs
                prefixes = [p for p in [self.plan.data_dir if self.plan else None, str(self.dir)] if p]
                step("umount", lambda: r.run_python(_ops_umount_under, prefixes, timeout=60))
            if self._scratch:
                step("scratch", lambda: r.run_python(_inrunner.scratch_revert, self._scratch, timeout=60))
        with contextlib.suppress(Exception):
            self._final_log = self.log_path.read_text(errors="replace")
        if self.keep_log and self._final_log is not None:
            step("keep_log", lambda: Path(self.keep_log).write_text(self._final_log))
        if self.dir is not None:
            if self._data_dir_arg is None and self.plan:
                # data written by k3s may be root-owned and inside tmpfs (already gone) or on disk
                shutil.rmtree(self.plan.data_dir, ignore_errors=True)
            shutil.rmtree(self.dir, ignore_errors=True)
        if self.own_runner:
            step("runner", r.close)
        if self.record is not None:
            self.record.drop()
        report["ok"] = not report["errors"]
        if report.get("interrupted"):
            raise KeyboardInterrupt
        return report

    def __enter__(self) -> K3sCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _safe(f) -> Any:
    try:
        return f()
    except Exception as e:  # noqa: BLE001
        return {"error": str(e)}


def _ops_kill(needles: list[str], pids: list[int]) -> dict[str, Any]:
    from ..workarounds import _ops

    return _ops.kill_matching(needles, pids)


def _ops_umount_under(prefixes: list[str]) -> dict[str, Any]:
    from ..workarounds import _ops

    return _ops.umount_under(prefixes)


def launch_k3s(
    profile: str | Profile = "control-plane",
    runner: str | Runner | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    extra_flags: Sequence[str] = (),
    timeout: float = 180.0,
    wait: bool | str = True,
    skip: Sequence[str] = (),
    add: Sequence[str] = (),
    params: dict[str, dict[str, Any]] | None = None,
    runner_options: dict[str, Any] | None = None,
    strict_flags: bool = True,
    host: bool = False,
    keep_log: str | os.PathLike | None = None,
    binary: str | os.PathLike | None = None,
) -> K3sCluster:
    """Start ``k3s server`` in a runner with a profile's workarounds applied first.

    Args:
        profile: a profile name (``k3snb.list_profiles()``) or a Profile.
        runner: a Runner, or a runner spec ("host", "gvisor", "gvisor:2024" …; then created here and
            closed by ``stop()``).
        data_dir: k3s ``--data-dir`` as seen inside the runner (default: in the cluster's work dir).
        extra_flags: more k3s server flags, validated against the k3s flag catalogue.
        timeout: seconds to wait for the target stage (when ``wait``).
        wait: True = wait for the profile's target stage, a stage name, or False (return at once).
        skip / add: workaround ids to leave out of / add to the profile (ablations).
        params: per-workaround parameters, e.g. ``{"cgroup-v1": {"layout": "fake-tmpfs"}}``.
        host: allow an agent in the Host runner, which shares the host's network namespace
            (kube-proxy/flannel would change the host's iptables and routes).
        keep_log: copy the k3s log here on ``stop()``.
        binary: a k3s path (default: :func:`find_k3s`).

    Raises:
        UsageError: unknown profile/workaround/flag/stage (before anything starts).
        K3sBinaryMissing: no k3s binary (before anything starts).
        WorkaroundFailed, K3sError: a start step failed (everything started so far is undone).
    """
    from ..runners import resolve
    from ..workarounds import get_workaround

    prof = get_profile(profile)
    flags = validate_flags(list(extra_flags), strict=strict_flags)
    params = dict(params or {})
    for w in [*skip, *add, *params]:
        get_workaround(w)  # raises UnknownWorkaround listing the valid ids
    for wid, p in params.items():
        get_workaround(wid, **p)
    target = validate_stage(wait if isinstance(wait, str) else prof.target_stage)
    if not prof.agent and target in ("node-registered", "node-ready") and "disable-agent" not in skip:
        raise InvalidParameter(f"profile {prof.name} runs no agent, so stage {target!r} cannot be reached",
                               hint="wait for 'readyz'")
    if binary is not None:
        p = Path(binary)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise InvalidParameter(f"binary {binary} is not an executable file", hint="pass a k3s path or omit it")
        k3s = K3sBinary(p.absolute(), "argument")
    else:
        k3s = find_k3s()
    _ = k3s.version  # parse `k3s --version` now: a broken binary fails before anything starts
    agent = prof.agent and "disable-agent" not in [w for w in prof.workarounds if w not in skip]
    r = resolve(runner, **(runner_options or {}))  # raises the runner's own UsageError on a bad spec
    own = r is not runner
    if r.capabilities.host_network_writable and agent and not host:
        if own:
            with contextlib.suppress(Exception):
                r.close()
        raise UsageError(
            f"profile {prof.name} runs an agent, and the {r.label} runner shares the host's network namespace "
            "(kube-proxy/flannel/CNI would change the host's iptables and routes)",
            hint="use runner='gvisor', or pass host=True to accept changes to the host's network tables",
        )
    cluster = K3sCluster(prof, r, own_runner=own, binary=k3s, data_dir=str(data_dir) if data_dir else None,
                         extra_flags=flags, skip=skip, add=add, params=params, target=target, host=host,
                         keep_log=str(keep_log) if keep_log else None)
    try:
        cluster._start()
        if wait:
            cluster.wait(target, timeout=timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster
