"""One container start in a runner, end to end, as a stage record (:class:`~k3snb.runtime.Attempt`).

``run_container(runner, "busybox", ["echo", "hi"], runtime="crun", via="containerd")`` validates its
input first (unknown runtime/snapshotter/via, missing or corrupt archive, missing runtime binary:
one UsageError each), gives the runner cgroup v1 hierarchies when it has none (the ``cgroup-v1``
workaround, best effort: what mounted is reported in ``attempt.cgroups``), runs the container and
cleans up everything it started, also on exceptions and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._state import Record, new_id
from ..errors import InvalidParameter, K3snbError
from ..workarounds import _ops
from . import _inside
from .containerd import (
    Containerd,
    _host_cgroup_mounts,
    _runner_name,
    check_runtime,
    check_snapshotter,
    runtime_binary,
)
from .stages import Attempt, failing_syscall, version_of

if TYPE_CHECKING:
    from ..images import Image
    from ..runners.base import Runner
    from ..tracing import Rule

__all__ = ["run_container", "run_direct", "auto_rules", "VIAS", "ALL_CONTROLLERS", "ensure_cgroups"]

VIAS = ("containerd", "direct")
ALL_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "pids", "freezer", "blkio")
# a runtime's own failure (not the container's exit status): runc logs "runc run failed", crun "crun: ..."
_RUNTIME_ERR = re.compile(r"runc run failed|^(crun|runc): |level=error|ERRO\[\d+\]|^libcontainer", re.M)


def validate(runtime: str, via: str, snapshotter: str | None, image: Image | str) -> Image:
    """Check every input before anything starts; UsageError (CLI exit 2) with a fix on bad input."""
    from ..images import get_image

    check_runtime(runtime)
    if via not in VIAS:
        raise InvalidParameter(f"unknown --via {via!r}; valid: {', '.join(VIAS)}",
                               hint="pass --via containerd or --via direct")
    if snapshotter is not None:
        check_snapshotter(snapshotter)
    runtime_binary(runtime)
    if via == "containerd":
        runtime_binary("containerd")
        runtime_binary("ctr")
    return get_image(image)


@contextlib.contextmanager
def ensure_cgroups(runner: Runner, mode: bool | str = "auto") -> Iterator[dict[str, Any]]:
    """Yield a report of the runner's cgroup hierarchies; with ``auto``, mount v1 ones if there are none.

    The mounts are the ``cgroup-v1`` workaround (best effort over every v1 controller), reverted on exit;
    ``"v1"`` also replaces a hybrid v1+v2 view (crun refuses it) inside the runner's own mount namespace.
    """
    have = runner.run_python(_inside.cgroup_mounts, timeout=60) if mode else []
    # crun refuses a hybrid layout (v1 controllers plus a cgroup2 mount): "v1" asks for a pure v1 view
    hybrid = {m["type"] for m in have} == {"cgroup", "cgroup2"}
    if not mode or (have and not (mode == "v1" and hybrid)):
        yield {"applied_by_kit": False, "mounted": sorted({Path(m["mountpoint"]).name for m in have})}
        return
    from ..workarounds import get_workaround

    w = get_workaround("cgroup-v1", controllers=ALL_CONTROLLERS, best_effort=True)
    res = w.apply(runner)
    try:
        st = w.state or {}
        yield {"applied_by_kit": True, "mounted": st.get("controllers_mounted", []),
               "refused": st.get("errors", {}), "ok": bool(res)}
    finally:
        w.revert(runner)


def auto_rules(runner: Runner, runtime: str) -> list[Rule]:
    """Interception rules for blockers the kit knows how to get past (each names its signature).

    R05: crun opens /proc/self/setgroups, which gVisor does not have; a fake reading "allow" (what a
    process outside any user namespace sees on Linux) lets it proceed.
    """
    from ..tracing import Rule

    out = []
    if runtime == "crun" and not runner.run(["test", "-e", "/proc/self/setgroups"], timeout=30).ok:
        out.append(Rule.fake("/proc/self/setgroups", "allow", note="R05: gVisor has no /proc/<pid>/setgroups"))
    return out


def loopback_ioctl_works(runner: Runner) -> bool:
    """Can a process bring up ``lo`` of a new network namespace with the SIOCSIFFLAGS ioctl (what crun
    does)? gVisor answers ENOTTY (R07); runc uses netlink instead."""
    bb = shutil.which("busybox") or "busybox"
    return runner.run(["unshare", "-n", bb, "ifconfig", "lo", "up"], timeout=30).ok


def run_container(runner: Runner, image: Image | str = "busybox", args: list[str] | tuple[str, ...] = ("echo", "hi"),
                  *, runtime: str = "runc", via: str = "containerd", snapshotter: str = "native",
                  trace: bool = False, cgroups: bool | str = "auto", timeout: float = 60.0,
                  rules: Sequence[Rule] | None = None, net_host: bool | None = None) -> Attempt:
    """Run one container and return its stage record (see module doc).

    ``rules=None`` (auto): interception rules for known, fixable blockers of this runtime in this runner
    (:func:`auto_rules`), listed in ``attempt.info["rules"]``; ``rules=()`` runs without any.
    ``net_host=None`` (auto): through containerd, crun gets no network namespace of its own where it
    could not bring up its loopback (R07; :func:`loopback_ioctl_works`); ``attempt.info["net_host"]``.
    """
    img = validate(runtime, via, snapshotter if via == "containerd" else None, image)
    a = Attempt(runner=_runner_name(runner), runtime=runtime, via=via, image=img.ref or img.name, args=list(args),
                snapshotter=snapshotter if via == "containerd" else None)
    if cgroups == "auto" and runtime == "crun":
        cgroups = "v1"
    if rules is None:
        rules = auto_rules(runner, runtime)
    a.info["rules"] = [f"{r.kind} {r.path}: {r.note}" for r in rules]
    if net_host is None:
        net_host = via == "containerd" and runtime == "crun" and not loopback_ioctl_works(runner)
    a.info["net_host"] = bool(net_host)
    with ensure_cgroups(runner, cgroups) as cg:
        a.cgroups = cg
        if via == "direct":
            run_direct(runner, img, list(args), runtime=runtime, trace=trace, timeout=timeout, attempt=a,
                       rules=rules)
        else:
            c = Containerd(runner, snapshotter=snapshotter, runtime=runtime, trace=trace, rules=rules)
            a.info["id"] = c.id
            try:
                try:
                    c.start()
                except K3snbError as e:
                    a.fail("runtime_up", e.msg, context=c.logs(200))
                else:
                    c.run(img, list(args), runtime=runtime, timeout=timeout, attempt=a, net_host=bool(net_host))
                    a.log = c.logs(400)
            finally:
                c.stop()
            if trace and a.failed_stage and not a.timed_out:  # a timeout has no failing syscall
                tr = c.trace_result()
                if tr is not None:
                    a.syscall = failing_syscall(tr, a.failed_stage, a.error or "")
                    tr.close()
    return a.finish()


def run_direct(runner: Runner, image: Image | str, args: list[str], *, runtime: str = "runc", trace: bool = False,
               timeout: float = 60.0, attempt: Attempt | None = None, rules: Sequence[Rule] = (),
               edit: Callable[[dict], None] | None = None, inspect: Callable[[object], object] | None = None
               ) -> Attempt:
    """``runc run`` / ``crun run`` on a bundle unpacked from ``image`` inside the runner (no containerd).

    ``rules``: interception rules (:class:`k3snb.Rule`) applied to the runtime and its children (the
    container process too) through the kit's tracer, e.g. a fake file the sandbox lacks.
    ``edit``: a module-level function that changes the OCI config in place (namespaces, caps …).
    ``inspect``: called with the run's :class:`~k3snb.tracing.Trace` (implies tracing); its result is
    ``attempt.info["inspect"]``.
    """
    from ..images import get_image

    img = get_image(image)
    binary = runtime_binary(runtime)
    a = attempt or Attempt(runner=_runner_name(runner), runtime=runtime, via="direct", image=img.ref or img.name,
                           args=list(args))
    cid = new_id("k3snb-rt-")
    a.info["id"] = cid
    base = f"/run/{cid}"
    stage_dir = Path(runner.workdir) / f"{cid}-img"
    rec = Record(kind="runtime", id=cid, paths=[str(stage_dir), base]
                 + [f"{m}/{cid}" for m in _host_cgroup_mounts()], note=f"{runtime} {base}").save()
    try:
        t = time.monotonic()
        v = runner.run([binary, "--version"], timeout=30)
        if not v.ok:
            a.fail("runtime_up", v.stderr + v.stdout, seconds=time.monotonic() - t)
            return a.finish()
        a.passed("runtime_up", time.monotonic() - t, v.stdout.splitlines()[0] if v.stdout else runtime)
        if ver := version_of(v.stdout):
            a.versions[runtime] = ver
        t = time.monotonic()
        stage_dir.mkdir(parents=True)
        staged = stage_dir / img.archive.name
        staged.write_bytes(img.archive.read_bytes())  # the runner may not see the kit cache
        a.passed("image_imported", time.monotonic() - t, img.digest[:19])
        t = time.monotonic()
        try:
            runner.run_python(_inside.extract_layers, str(staged), [d["digest"] for d in img.layers],
                              f"{base}/bundle/rootfs", timeout=timeout)
        except K3snbError as e:
            a.fail("layer_unpacked", e.msg, seconds=time.monotonic() - t)
            return a.finish()
        cfg = img.config.get("config", {})
        argv = list(args) or [*(cfg.get("Entrypoint") or []), *(cfg.get("Cmd") or [])]
        from . import oci_config

        conf = oci_config(argv, env=cfg.get("Env"), cwd=cfg.get("WorkingDir") or "/", cgroups_path=f"/{cid}")
        if edit is not None:
            edit(conf)
        runner.run(["sh", "-c", f"cat > {base}/bundle/config.json"], input=json.dumps(conf), check=True)
        a.passed("layer_unpacked", time.monotonic() - t, "rootfs extracted, config.json written")
        # the runtime's own errors go to its JSON log; the container's exit status is separate
        log = f"{base}/runtime.log"
        cmd = [binary, "--root", f"{base}/state", "--log", log, "--log-format", "json", "run", "--bundle",
               f"{base}/bundle", cid]
        t = time.monotonic()
        if trace or rules or inspect:
            from ..tracing import trace as _trace

            tr = _trace(cmd, runner=runner, timeout=timeout, rules=rules)
            rc, out, err = tr.returncode, tr.stdout, tr.stderr
        else:
            tr = None
            res = runner.run(cmd, timeout=timeout)
            rc, out, err = res.returncode, res.stdout, res.stderr
        dt = time.monotonic() - t
        a.stdout, a.stderr = out, err
        errors = _log_errors(runner.run(["cat", log], timeout=30).stdout)
        if rc is None:  # its own outcome: how far it got is the runtime's state of the container
            a.time_out(timeout, _runtime_state(runner, binary, f"{base}/state", cid), seconds=dt,
                       output=bool(out or err), runtime=runtime)
        elif rc != 0 and (errors or _RUNTIME_ERR.search(err)):
            a.fail("container_created", "\n".join([*errors, err]), seconds=dt)
            if tr is not None:
                a.syscall = failing_syscall(tr, a.failed_stage, a.error or "")
        else:
            for s in ("container_created", "runtime_init", "pivot_root", "capabilities_applied"):
                a.passed(s, None, f"{runtime} run got the process started")
            a.passed("process_execd", dt, f"{runtime} run returned")
            if out or err:
                a.passed("output_seen", None, f"{len(out)} bytes stdout")
            else:
                a.skipped("output_seen", "the process printed nothing")
            a.returncode = rc
            a.passed("exit_status", None, f"exit {rc}")
        if tr is not None:
            if inspect is not None:
                a.info["inspect"] = inspect(tr)
            tr.close()
        return a.finish()
    finally:
        with contextlib.suppress(Exception):
            runner.run([binary, "--root", f"{base}/state", "delete", "--force", cid], timeout=30)
        # each step on its own: a failing (or timed-out) kill must not skip the umount and rmdir after it
        for fn, *fargs in ((_ops.kill_matching, [base], []), (_inside.cgroup_remove, f"/{cid}"),
                           (_ops.umount_under, [base]), (_ops.cleanup_dir, base)):
            with contextlib.suppress(Exception):
                runner.run_python(fn, *fargs, timeout=60)
        shutil.rmtree(stage_dir, ignore_errors=True)
        if not any(Path(p).exists() for p in rec.paths):
            rec.drop()



def _runtime_state(runner: Runner, binary: str, root: str, cid: str) -> str | None:
    """``runc state`` / ``crun state`` status of a container (running, created, stopped); None if none."""
    res = runner.run([binary, "--root", root, "state", cid], timeout=30)
    try:
        return str(json.loads(res.stdout)["status"]) if res.ok else None
    except (ValueError, KeyError, TypeError):
        return None


def _log_errors(text: str) -> list[str]:
    """Error messages in a runc/crun JSON log (one object per line)."""
    out = []
    for line in text.splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if str(d.get("level", "")).lower() in ("error", "fatal", "panic"):
            out.append(str(d.get("msg", "")))
    return out
