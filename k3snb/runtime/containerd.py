"""containerd supervised by the kit inside a runner (Host private namespace or gVisor sandbox).

Everything containerd writes lives under one tagged directory per instance (``state_dir``, default
``/run/k3snb-ctd-<id>``: a tmpfs in both runners, where unix sockets and overlay mounts work) and a
config/log directory in the runner's workdir. Containers started through :meth:`Containerd.run` get
the cgroup parent ``/k3snb-ctd-<id>``, so :meth:`stop` can find and remove every process, mount
and cgroup directory of this instance and nothing of another one running on the same machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._paths import TAG
from .._state import Record, new_id
from ..errors import InvalidParameter, K3snbError, MissingDependency
from ..report import Rich, render
from ..workarounds import _ops
from . import _inside
from .stages import Attempt, version_of

if TYPE_CHECKING:
    import pandas as pd

    from ..images import Image
    from ..runners.base import Runner, RunResult
    from ..signatures import Classification
    from ..tracing import Rule, Trace

__all__ = ["Containerd", "containerd_config", "RUNTIMES", "SNAPSHOTTERS", "runtime_binary", "check_runtime",
           "check_snapshotter"]

RUNTIMES = ("runc", "crun")
SNAPSHOTTERS = ("native", "overlayfs")
_PKG = {"runc": "runc", "crun": "crun", "containerd": "containerd", "ctr": "containerd"}
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _search_path() -> str:
    # K3SNB_RUNTIME_PATH: where runc, crun, containerd and ctr are looked up (a PATH-style list)
    return os.environ.get("K3SNB_RUNTIME_PATH") or SBIN_PATH


def check_runtime(name: str, valid: Sequence[str] = RUNTIMES) -> str:
    """``name`` if it is one of ``valid`` runtimes; else InvalidParameter (CLI exit 2) listing them."""
    if name not in valid:
        raise InvalidParameter(f"unknown runtime {name!r}; valid: {', '.join(valid)}",
                               hint=f"pass runtime {' or '.join(map(repr, valid))} (CLI: --runtime {'|'.join(valid)})")
    return name


def check_snapshotter(name: str) -> str:
    """``name`` if containerd here can use it as a snapshotter; else InvalidParameter listing the valid ones."""
    if name not in SNAPSHOTTERS:
        raise InvalidParameter(f"unknown snapshotter {name!r}; valid: {', '.join(SNAPSHOTTERS)}",
                               hint="pass snapshotter 'native' or 'overlayfs' (CLI: --snapshotter native|overlayfs)")
    return name


def runtime_binary(name: str) -> str:
    """Path of an OCI runtime (``runc``/``crun``) or a containerd tool; MissingDependency (exit 2) if absent.

    Looked up in ``$K3SNB_RUNTIME_PATH`` (default: the sbin/bin directories), not the caller's PATH.
    """
    if "/" not in name and name not in _PKG:
        check_runtime(name)
    p = name if "/" in name else shutil.which(name, path=_search_path())
    if not p or not Path(p).is_file():
        raise MissingDependency(f"{name} not found in {_search_path()}",
                                hint=f"apt-get install {_PKG.get(name, name)} (or point K3SNB_RUNTIME_PATH at it)")
    return p


def containerd_config(base: str, *, snapshotter: str = "native", runtime: str = "runc",
                      sandbox_image: str = "k3snb.local/pause:latest", no_new_keyring: bool = True,
                      cni_bin_dir: str = "/usr/lib/cni", cni_conf_dir: str | None = None,
                      unprivileged_ports: bool = True, unprivileged_icmp: bool = True,
                      runtimes: dict[str, str] | None = None, debug: bool = False, run_dir: str | None = None) -> str:
    """containerd 1.6 config (version 2): root and state under ``base``; socket and runtime state under
    ``run_dir`` (default ``base``; kept short and on tmpfs: unix socket paths are limited to 107 bytes).

    Runtimes are ``io.containerd.runc.v2`` shims whose ``BinaryName`` is runc or crun (cgroupfs driver:
    ``SystemdCgroup = false``); the default one is ``runtime``. W32 (NoNewKeyring) and W33 (a local
    sandbox image, never pulled) are on.
    """
    check_snapshotter(snapshotter)
    runtimes = runtimes or {n: n for n in RUNTIMES}
    check_runtime(runtime, tuple(runtimes))
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    run_dir = run_dir or base
    rt_blocks = "".join(f"""
    [{cri}.containerd.runtimes.{name}]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.{name}.options]
        BinaryName = "{binary}"
        Root = "{run_dir}/{name}-root"
        SystemdCgroup = false
        NoNewKeyring = {str(no_new_keyring).lower()}
""" for name, binary in runtimes.items())
    return f"""version = 2
root = "{base}/root"
state = "{base}/state"
plugin_dir = ""

[grpc]
  address = "{run_dir}/containerd.sock"

[ttrpc]
  address = "{run_dir}/containerd.sock.ttrpc"

[debug]
  level = "{'debug' if debug else 'info'}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"

[{cri}]
  sandbox_image = "{sandbox_image}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  disable_cgroup = false
  enable_unprivileged_ports = {str(unprivileged_ports).lower()}
  enable_unprivileged_icmp = {str(unprivileged_icmp).lower()}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{cni_conf_dir or base + '/cni/net.d'}"
  [{cri}.containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "{runtime}"
{rt_blocks}"""


class Containerd(Rich):
    """containerd inside a runner; ``with Containerd(runner) as c: c.run("busybox", ["echo", "hi"])``.

    Args:
        runner: a started Runner.
        snapshotter: ``native`` or ``overlayfs`` (the CRI default and :meth:`run`'s).
        runtime: default runtime name for CRI: ``runc`` or ``crun`` (both are configured).
        state_dir: where root/state/socket live (default ``/run/k3snb-ctd-<id>`` inside the runner).
        cni_bin_dir, cni_conf_dir: CNI plugin binaries / network configs for CRI (conf dir default under
            ``conf_dir``, i.e. host-visible and writable).
        unprivileged_ports, unprivileged_icmp: the CRI ``enable_unprivileged_*`` toggles.
        sandbox_image: CRI pause image; default the kit's ``pause`` (imported at start).
        trace: run containerd (and so its shims and runtimes) under the kit's tracer.
        rules: interception rules (:class:`k3snb.Rule`) for containerd and everything it starts (shims,
            runc/crun, containers), applied by the kit's tracer; e.g. a fake file the sandbox lacks.
    """

    _title_text = "containerd"

    def __init__(self, runner: Runner, *, snapshotter: str = "native", runtime: str = "runc",
                 state_dir: str | None = None, cni_bin_dir: str = "/usr/lib/cni", cni_conf_dir: str | None = None,
                 unprivileged_ports: bool = True, unprivileged_icmp: bool = True,
                 sandbox_image: str | None = None, namespace: str = "k8s.io", trace: bool = False,
                 rules: Sequence[Rule] = (), debug: bool = False, timeout: float = 30.0) -> None:
        self.runner = runner
        self.binary = runtime_binary("containerd")
        self.ctr_binary = runtime_binary("ctr")
        check_snapshotter(snapshotter)
        check_runtime(runtime)
        self.runtimes = {n: p for n in RUNTIMES if (p := shutil.which(n, path=_search_path()))}
        runtime_binary(runtime)  # the default runtime must exist
        self.id = new_id("k3snb-ctd-")
        self.run_dir = f"/run/{self.id}"  # socket, fifos, runc/crun state: tmpfs in every runner
        self.base = state_dir or self.run_dir  # containerd root (content, snapshots) and state
        self.conf_dir = Path(runner.workdir) / f"{self.id}-conf"
        self.cgroup_parent = f"/{self.id}"
        self.snapshotter, self.runtime, self.namespace = snapshotter, runtime, namespace
        self.cni_bin_dir, self.cni_conf_dir = cni_bin_dir, cni_conf_dir or str(self.conf_dir / "net.d")
        self.unprivileged_ports, self.unprivileged_icmp = unprivileged_ports, unprivileged_icmp
        self._kit_pause = sandbox_image is None
        self.sandbox_image = sandbox_image or "k3snb.local/pause:latest"
        self.trace, self.debug, self.timeout = trace, debug, timeout
        self.rules = list(rules)
        self.proc = None
        self.log_path = self.conf_dir / "containerd.log"
        self.startup_s: float | None = None
        self.version: str | None = None  # the daemon's, from `ctr version` once it serves
        self._runtime_versions: dict[str, str | None] = {}
        self.pause_unpacked: bool | None = None
        self.record: Record | None = None
        self.cleanup: dict[str, Any] = {}
        self._final_log = ""
        self._trace_dir = self.conf_dir / "trace"
        self._trace_out = None
        self._stopped = False

    # -- paths -------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.run_dir}/containerd.sock"

    @property
    def config_path(self) -> Path:
        return self.conf_dir / "config.toml"

    def config(self) -> str:
        return containerd_config(self.base, run_dir=self.run_dir, snapshotter=self.snapshotter, runtime=self.runtime,
                                 sandbox_image=self.sandbox_image, cni_bin_dir=self.cni_bin_dir,
                                 cni_conf_dir=self.cni_conf_dir, unprivileged_ports=self.unprivileged_ports,
                                 unprivileged_icmp=self.unprivileged_icmp, runtimes=self.runtimes,
                                 debug=self.debug)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Containerd:
        """Write the config, start containerd, wait for its socket and import the kit's pause image.

        On any failure (also Ctrl-C) everything started so far is stopped and removed before the error
        propagates; :meth:`logs` still shows containerd's last lines.
        """
        self._stopped = False
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Containerd:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        Path(self.cni_conf_dir).mkdir(parents=True, exist_ok=True)
        # tag before starting anything: kill -9 from here on leaves a record for `doctor --clean`
        # (the runner's own record ends the processes; this one names the paths and host cgroups)
        self.record = Record(kind="runtime", id=self.id, paths=list(dict.fromkeys([str(self.conf_dir), self.base,
                                                                                  self.run_dir]))
                             + [f"{m}{self.cgroup_parent}" for m in _host_cgroup_mounts()],
                             note=f"containerd {self.base}").save()
        self.config_path.write_text(self.config())
        self.runner.run(["mkdir", "-p", self.base, self.run_dir], check=True)
        argv = [self.binary, "--config", str(self.config_path)]
        if self.trace or self.rules:
            from ..tracing._launch import rule_opts, tracer_argv

            self._trace_dir.mkdir(parents=True, exist_ok=True)
            opts = ["--meta", str(self._trace_dir / "meta.json"), "--grace", "3",
                    *rule_opts(self.rules, self._trace_dir)]
            action = ["trace", "--out", str(self._trace_dir / "trace.rows")] if self.trace else ["intercept"]
            argv = [*tracer_argv(self.runner.python), *action, *opts, "--", *argv]
        t0 = time.monotonic()
        self.proc = self.runner.spawn(argv, stdout=self.log_path, stderr=self.log_path)
        with contextlib.suppress(Exception):
            pid = getattr(self.proc, "client", None)
            if pid is not None:
                self.record.add_pid(pid.pid).save()
        deadline = t0 + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise K3snbError(f"containerd exited {self.proc.poll()}: {self.logs(15)}",
                                 hint="see Containerd.logs() and Containerd.classify()")
            res = self.ctr("version", timeout=10)
            if res.ok:
                self.startup_s = round(time.monotonic() - t0, 3)
                self.version = version_of(res.stdout)
                break
            time.sleep(0.2)
        else:
            raise K3snbError(f"containerd socket not up after {self.timeout}s: {self.logs(15)}",
                             hint="see Containerd.logs()")
        if self._kit_pause:
            from ..images import pause

            # unpacked for CRI's sandboxes; where unpacking fails (runsc 2022: R01) containerd still
            # serves, with the image content only, and run() reports the unpack failure as its stage
            res = self.import_image(pause())
            self.pause_unpacked = res.ok
            if not res.ok:
                res = self.import_image(pause(), unpack=False)
            if not res.ok:
                raise K3snbError(f"importing the kit's pause image failed: {(res.stderr or res.stdout).strip()[-300:]}",
                                 hint="see Containerd.logs()")
        return self

    def runtime_version(self, name: str) -> str | None:
        """``<name> --version`` of an OCI runtime as the runner runs it (``1.1.5+ds1``); None if unreadable.
        Asks the binary this containerd is configured with (a kit wrapper passes ``--version`` through)."""
        if name not in self._runtime_versions:
            res = self.runner.run([self.runtimes.get(name) or runtime_binary(name), "--version"], timeout=30)
            self._runtime_versions[name] = version_of(res.stdout) if res.ok else None
        return self._runtime_versions[name]

    def ctr(self, *args: str, namespace: str | None = None, timeout: float = 60.0) -> RunResult:
        return self.runner.run([self.ctr_binary, "--address", self.address, "--namespace",
                                namespace or self.namespace, *args], timeout=timeout)

    def import_image(self, image: Image | str, *, unpack: bool = True, snapshotter: str | None = None) -> RunResult:
        """W43: import an image (kit image, spec or archive) into ``namespace``; no registry involved.

        The archive is staged in the workdir first: the runner may not see the kit cache's path.
        """
        from ..images import get_image

        img = get_image(image)
        staged = self.conf_dir / "images" / img.archive.name
        if not staged.exists():
            staged.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(img.archive, staged)
        args = ["images", "import", "--snapshotter", snapshotter or self.snapshotter]
        if not unpack:
            args.append("--no-unpack")
        return self.ctr(*args, str(staged), timeout=120)

    def logs(self, tail: int = 50) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return "\n".join(self._final_log.splitlines()[-tail:])

    def classify(self) -> Classification:
        """Blocker signatures in containerd's log (:func:`k3snb.classify`)."""
        from ..signatures import classify

        return classify(self.logs(100_000))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def watch(self, **kw: Any) -> Any:
        """Live view of this containerd: process tree, CPU/memory sparklines, the latest classified log
        lines, refreshed every second until the cell is interrupted (a static snapshot without a front
        end). Keywords go to :func:`k3snb.monitoring.watch` (interval, duration, lines, live)."""
        from ..monitoring import watch

        return watch(self, log=kw.pop("log", self.log_path), title=kw.pop("title", f"containerd {self.id}"), **kw)

    def stop(self) -> dict[str, Any]:
        """End every container, shim and containerd of this instance; remove its mounts, cgroups, dirs.

        A second call (e.g. ``__exit__`` after a failed :meth:`start` cleaned up) returns the first report.
        """
        if self._stopped:
            return self.cleanup
        report: dict[str, Any] = {}
        runner_up = getattr(self.runner, "alive", lambda: True)()
        if runner_up and self.alive():
            with contextlib.suppress(Exception):
                for cid in self.ctr("tasks", "ls", "-q", timeout=15).stdout.split():
                    self.ctr("tasks", "kill", "-s", "SIGKILL", cid, timeout=10)
        if self.proc is not None:
            self.proc.terminate(5)
        if runner_up:
            # shims carry the socket address on their command line; runc/crun state is under base.
            # Each step on its own: one that fails (or times out) must not skip the ones after it.
            steps = [("cgroups", _inside.cgroup_remove, (self.cgroup_parent,)),
                     ("killed", _ops.kill_matching, ([self.run_dir, self.base, str(self.conf_dir)], [])),
                     ("cgroups_after", _inside.cgroup_remove, (self.cgroup_parent,)),
                     ("umount", _ops.umount_under, ([self.base, self.run_dir],)),
                     (None, _ops.cleanup_dir, (self.base,)), (None, _ops.cleanup_dir, (self.run_dir,))]
            for name, fn, fargs in steps:
                try:
                    out = self.runner.run_python(fn, *fargs, timeout=60)
                except Exception as e:  # reported, and the record keeps what is left for doctor --clean
                    report.setdefault("errors", {})[name or fn.__name__] = str(e)[:300]
                    continue
                if name == "killed":
                    out = out["killed"]
                elif name == "umount":
                    out = out.get("mounts")
                if name:
                    report[name] = out
        with contextlib.suppress(OSError):
            self._final_log = self.log_path.read_text(errors="replace")
        if self.trace and (self._trace_dir / "trace.rows").exists():
            # keep the trace: the workdir copy goes with conf_dir (tagged temp dir, reaped if killed)
            from ..tracing._launch import OutDir

            self._trace_out = OutDir("ctd-trace")
            # owned by this handle until trace_result() hands it to a Trace: removed with whichever goes
            self._trace_out.attach_to(self)
            shutil.move(str(self._trace_dir / "trace.rows"), str(self._trace_out.path / "trace.rows"))
        shutil.rmtree(self.conf_dir, ignore_errors=True)
        self.proc = None
        if self.record is not None:
            for p in self.record.paths:  # what the runner could not remove but this side can (its workdir)
                if TAG in Path(p).name and Path(p).is_dir() and not Path(p).is_relative_to("/sys"):
                    shutil.rmtree(p, ignore_errors=True)
            left = [p for p in self.record.paths if Path(p).exists()]
            if not left:
                self.record.drop()
                self.record = None
            report["left"] = left
        self.cleanup = report
        self._stopped = True
        return report

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- containers --------------------------------------------------------------------------
    def run(self, image: Image | str, args: list[str] | tuple[str, ...] | None = None, *,
            runtime: str | None = None, timeout: float = 60.0, attempt: Attempt | None = None,
            net_host: bool = False) -> Attempt:
        """Import ``image``, unpack it, run one container with ``ctr run``; the stage record of it.

        Stages: image_imported (``import --no-unpack``), layer_unpacked (the import again, unpacking
        into the snapshotter), container_created … process_execd (``ctr run``: the shim runs
        the runtime; its error text is attributed by :mod:`k3snb.runtime.stages`), output_seen,
        exit_status. The container is removed afterwards. ``net_host``: no network namespace of its own
        (``ctr run --net-host``). The process's stdin ends (EOF) once it runs, as under ``runc run``. Past
        ``timeout`` the record says so (:meth:`Attempt.time_out`), at the stage the task's state shows.
        """
        from ..images import get_image

        rt = runtime or self.runtime
        binary = runtime_binary(rt)
        img = get_image(image)
        a = attempt or Attempt(runner=_runner_name(self.runner), runtime=rt, via="containerd", image=img.ref or
                               img.name, args=list(args or []), snapshotter=self.snapshotter)
        if not a.reached:
            a.passed("runtime_up", self.startup_s, f"containerd socket ready ({self.snapshotter})")
        # what runs this container, read inside the runner (absent when unreadable, never assumed)
        for name, ver in (("containerd", self.version), (rt, self.runtime_version(rt))):
            if ver:
                a.versions.setdefault(name, ver)
        cid = new_id("k3snb-c-")
        t = time.monotonic()
        res = self.import_image(img, unpack=False)
        if not res.ok or not img.ref:
            a.fail("image_imported", res.stderr + res.stdout if img.ref else "image archive has no image name",
                   seconds=time.monotonic() - t)
            return a
        a.passed("image_imported", time.monotonic() - t, img.digest[:19])
        t = time.monotonic()
        # the same import again unpacks into the snapshotter: ctr has no separate unpack command
        res = self.import_image(img, unpack=True)
        if not res.ok:
            a.fail("layer_unpacked", res.stderr + res.stdout, seconds=time.monotonic() - t)
            return a
        a.passed("layer_unpacked", time.monotonic() - t, f"snapshot prepared ({self.snapshotter})")
        try:
            t = time.monotonic()
            # --runc-root: runc/crun state under this instance's run_dir, not the machine-wide
            # /run/containerd/runc that every containerd on the host would share
            ctr = [self.ctr_binary, "--address", self.address, "--namespace", self.namespace]
            res = self.runner.run(
                ["sh", "-c", _STDIN_EOF_AFTER_START, "sh", f"{self.run_dir}/{cid}", cid, *ctr,
                 "run", "--rm", "--snapshotter", self.snapshotter, "--runtime", "io.containerd.runc.v2",
                 "--runc-binary", binary, "--runc-root", f"{self.run_dir}/{rt}-root",
                 "--cgroup", f"{self.cgroup_parent}/{cid}",
                 "--fifo-dir", f"{self.run_dir}/fifo", *(["--net-host"] if net_host else []),
                 img.ref, cid, *(args or [])], timeout=timeout)
            dt = time.monotonic() - t
            a.stdout, a.stderr = res.stdout, res.stderr
            if res.timed_out:  # its own outcome: how far it got is the task's state, not words in a log
                a.time_out(timeout, self._task_status(cid), seconds=dt, output=bool(res.stdout or res.stderr),
                           runtime=rt)
            elif _task_failed(res):
                a.fail("container_created", res.stderr or res.stdout, seconds=dt, context=self._log_since(cid))
            else:
                for s in ("container_created", "runtime_init", "pivot_root", "capabilities_applied"):
                    a.passed(s, None, f"{rt} create succeeded")
                a.passed("process_execd", dt, "task started and waited for")
                if res.stdout or res.stderr:
                    a.passed("output_seen", None, f"{len(res.stdout)} bytes stdout")
                else:
                    a.skipped("output_seen", "the process printed nothing")
                a.returncode = res.returncode
                a.passed("exit_status", None, f"exit {res.returncode}")
        finally:
            self.ctr("tasks", "delete", "--force", cid, timeout=20)
            self.ctr("containers", "delete", cid, timeout=20)
        return a

    def _task_status(self, cid: str) -> str | None:
        """The task's status as containerd has it (running, created, stopped, …); None if it has none."""
        for line in self.ctr("tasks", "ls", timeout=20).stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3 and parts[0] == cid:
                return parts[2].lower()
        return None

    def _log_since(self, cid: str) -> str:
        return "\n".join(ln for ln in self.logs(400).splitlines() if cid in ln or "level=error" in ln)[-4000:]

    def trace_result(self) -> Trace | None:
        """The tracer's Trace of containerd and everything it started (after stop(), trace=True)."""
        from ..tracing import Trace
        from ..tracing._store import convert

        out = self._trace_out
        if out is None or not (out.path / "trace.rows").exists():
            return None
        convert(out.path / "trace.rows", out.path / "trace.arrow")
        (out.path / "trace.rows").unlink()
        t = Trace(path=out.path / "trace.arrow", command=["containerd"], returncode=None)
        fin = getattr(self, "_finalizer", None)
        if fin is not None:
            fin.detach()  # the Trace owns the files from now on
        out.attach_to(t)  # removed with the Trace (or by doctor --clean after a kill)
        self._trace_out = None
        return t

    # -- presentation ------------------------------------------------------------------------
    def plugins(self) -> pd.DataFrame:
        """``ctr plugins ls`` as a DataFrame (type, id, platforms, status)."""
        import pandas as pd

        res = self.ctr("plugins", "ls")
        rows = []
        for line in res.stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3:
                rows.append({"type": parts[0], "id": parts[1], "platforms": " ".join(parts[2:-1]), "status": parts[-1]})
        return pd.DataFrame(rows, columns=["type", "id", "platforms", "status"])

    def summary(self) -> dict[str, Any]:
        return {"runner": _runner_name(self.runner), "alive": self.alive(), "address": self.address,
                "startup_s": self.startup_s, "snapshotter": self.snapshotter, "runtime": self.runtime}

    def to_frame(self) -> pd.DataFrame:
        return self.plugins() if self.alive() else __import__("pandas").DataFrame()

    def _repr_html_(self) -> str:
        return render("containerd", self.summary(), [("log (tail)", self.logs(30) or "(empty)")],
                      text=self._repr_text())


# `sh -c` around `ctr run` ($1: path prefix for a fifo, $2: container id, $3..$7: ctr and its
# --address/--namespace, then the run arguments). ctr copies its stdin into the container's and, at EOF,
# asks the shim to close it (CloseIO), which the shim needs: it keeps the container's stdin open until
# then. ctr installs that close only after the task is created, so the immediate EOF of /dev/null comes
# first and is lost (the race nerdctl fixed in containerd/nerdctl#5042; ctr 1.6 still has it): a process
# reading stdin (busybox's default sh, cat) never ends. Here ctr's stdin is a fifo held open until the task runs (or ctr has exited), then closed: the
# process sees EOF, as under `runc run` with /dev/null.
_STDIN_EOF_AFTER_START = r"""
p=$1 cid=$2; shift 2
rm -f "$p.in" "$p.rc"; mkfifo "$p.in" || exit 125
{ "$@" <"$p.in"; echo $? >"$p.rc"; } &
exec 3>"$p.in"
until [ -e "$p.rc" ] || "$1" "$2" "$3" "$4" "$5" tasks ls 2>/dev/null |
      grep -Eq "^$cid[[:space:]]+[0-9]+[[:space:]]+(RUNNING|STOPPED|PAUSED)"; do sleep 0.2; done
exec 3>&-
wait
rc=$(cat "$p.rc"); rm -f "$p.in" "$p.rc"
exit "$rc"
"""


def _task_failed(res: RunResult) -> bool:
    # `ctr tasks start` exits with the container's status; its own failures print "ctr: ..." on stderr
    return res.returncode is None or "ctr: " in res.stderr and (
        "failed" in res.stderr or "error" in res.stderr.lower())


def _runner_name(runner: Runner) -> str:
    spec = getattr(runner, "spec", None)
    if isinstance(spec, str) and spec:
        return spec
    build = getattr(runner, "runsc_build", None)
    return f"{runner.kind}:{build}" if build else runner.kind


def _host_cgroup_mounts() -> list[str]:
    """This machine's cgroup mountpoints (where a Host runner's containers get their cgroups)."""
    return [m["mountpoint"] for m in _inside.cgroup_mounts()]
