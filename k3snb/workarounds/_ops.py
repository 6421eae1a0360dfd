"""Small, stdlib-only operations that run *inside* a runner through ``Runner.run_python``.

Raw ``mount(2)``/``umount2(2)``/``statfs(2)`` via ctypes rather than util-linux: in runsc 2022 GNU
coreutils and util-linux fail on ``statx`` and print misleading errors, while raw syscalls return
exact errnos (gvisor-matrix §1). Every function returns plain dicts so results pickle back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from typing import Any

# the syscalls and the mountinfo parser live in k3snb._system (one place for host and runner code)
from .._system import (  # noqa: F401  (re-exported: callers use _ops.mount / _ops.umount)
    CGROUP_SUPER_MAGIC,
    MNT_DETACH,
    MS_BIND,
    MS_PRIVATE,
    MS_REC,
    MS_SHARED,
    MS_SLAVE,
    TMPFS_MAGIC,
    V9FS_MAGIC,
    is_mountpoint,
    mount,
    mountinfo,
    statfs_type,
    umount,
)


def _err(e: OSError) -> dict[str, Any]:
    return {"ok": False, "errno": errno.errorcode.get(e.errno or 0, str(e.errno)), "error": str(e)}


# -- /dev/kmsg (W1) ------------------------------------------------------------------------------
def kmsg_apply(path: str, source: str) -> dict[str, Any]:
    existed = os.path.lexists(path)
    if is_mountpoint(path):
        return {"ok": True, "created": False, "mounted": False, "note": f"{path} already a mount point"}
    try:
        if not existed:
            with open(path, "a"):
                pass
        mount(source, path, None, MS_BIND)
    except OSError as e:
        if not existed and os.path.lexists(path):
            os.unlink(path)
        return _err(e) | {"created": False}
    return {"ok": True, "created": not existed, "mounted": True}


def kmsg_check(path: str) -> dict[str, Any]:
    res: dict[str, Any] = {"exists": os.path.lexists(path), "bind_mounted": is_mountpoint(path)}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # the kubelet OOM watcher opens it for reading
        os.close(fd)
        with open(path, "w") as f:
            f.write("k3snb kmsg check\n")
        res["open_rw"] = True
    except OSError as e:
        res["open_rw"] = False
        res["error"] = str(e)
    res["ok"] = res["open_rw"]
    return res


def umount_and_remove(path: str, mounted: bool, created: bool, rmdir: bool = False) -> dict[str, Any]:
    res: dict[str, Any] = {"ok": True}
    if mounted:
        try:
            umount(path)
        except OSError as e:
            res = _err(e)
    if created and os.path.lexists(path):
        try:
            if rmdir:
                os.rmdir(path)
            else:
                os.unlink(path)
        except OSError as e:
            res = _err(e)
    return res


# -- propagation (W2) ----------------------------------------------------------------------------
def _under(mp: str, root: str) -> bool:
    return mp == root or root == "/" or mp.startswith(root.rstrip("/") + "/")


def propagation_of(path: str) -> dict[str, str]:
    p = os.path.realpath(path)
    return {m.mountpoint: m.propagation for m in mountinfo() if _under(m.mountpoint, p)}


def propagation_apply(path: str, fallback: str | None) -> dict[str, Any]:
    before = propagation_of(path)
    try:
        mount(None, path, None, MS_SHARED | MS_REC)
        return {"ok": True, "mode": "rshared", "target": path, "before": before}
    except OSError as e:
        first = _err(e)
    if not fallback:
        return first | {"before": before}
    # gVisor refuses MS_REC|MS_SHARED on "/" but accepts MS_SHARED on a submount (gvisor-matrix §1)
    made_dir = not os.path.isdir(fallback)
    os.makedirs(fallback, exist_ok=True)
    self_bind = False
    try:
        if not is_mountpoint(fallback):
            mount(fallback, fallback, None, MS_BIND)
            self_bind = True
        before_fb = propagation_of(fallback)
        mount(None, fallback, None, MS_SHARED)
    except OSError as e:
        if self_bind:
            umount(fallback)
        return _err(e) | {"first_attempt": first}
    return {
        "ok": True,
        "mode": "shared-submount",
        "target": fallback,
        "self_bind": self_bind,
        "made_dir": made_dir,
        "before": before_fb,
        "first_attempt": first,
    }


def propagation_revert(state: dict[str, Any]) -> dict[str, Any]:
    target = state["target"]
    if state.get("self_bind"):
        res = umount_and_remove(target, True, state.get("made_dir", False), rmdir=True)
        return res
    # Restore the type each mount had; peer-group identity cannot be restored, only the kind.
    errors = []
    for mp, prop in state.get("before", {}).items():
        kind = MS_SHARED if "shared:" in prop else MS_SLAVE if "master:" in prop else MS_PRIVATE
        try:
            mount(None, mp, None, kind)
        except OSError as e:
            errors.append(str(e))
    return {"ok": not errors, "errors": errors}


# -- tmpfs data dir (W7) -------------------------------------------------------------------------
def tmpfs_apply(path: str, size: str, shared: bool) -> dict[str, Any]:
    made = not os.path.isdir(path)
    os.makedirs(path, exist_ok=True)
    try:
        mount("tmpfs", path, "tmpfs", 0, f"size={size},mode=0755")
    except OSError as e:
        if made:
            os.rmdir(path)
        return _err(e)
    res: dict[str, Any] = {"ok": True, "made_dir": made, "shared": False}
    if shared:
        try:
            mount(None, path, None, MS_SHARED)
            res["shared"] = True
        except OSError as e:
            res["shared_error"] = str(e)
    return res


def fs_check(path: str, magic: int) -> dict[str, Any]:
    t = statfs_type(path)
    prop = propagation_of(path).get(os.path.realpath(path), "")
    return {
        "ok": t == magic and is_mountpoint(path),
        "f_type": hex(t) if t is not None else None,
        "mountpoint": is_mountpoint(path),
        "propagation": prop,
    }


# -- bind a file over another (diskstats, iptables) ----------------------------------------------
def bind_file(source: str, target: str) -> dict[str, Any]:
    if not os.path.exists(target):
        return {
            "ok": False,
            "errno": "ENOENT",
            "error": f"bind target {target} does not exist (a bind mount needs an existing target)",
        }
    try:
        mount(source, target, None, MS_BIND)
    except OSError as e:
        return _err(e)
    return {"ok": True, "mounted": True}


def read_text(path: str, limit: int = 4096) -> dict[str, Any]:
    try:
        with open(path) as f:
            return {"ok": True, "text": f.read(limit), "mountpoint": is_mountpoint(path)}
    except OSError as e:
        return _err(e)


# -- cgroup v1 layouts ---------------------------------------------------------------------------
def _hierarchies() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/cgroups") as f:
            for line in f:
                if line.startswith("#"):
                    continue
                p = line.split()
                if len(p) >= 4 and p[3] == "1":
                    out[p[0]] = int(p[1])
    except OSError:
        pass
    return out


def cgroup_groups(controllers: list[str]) -> list[list[str]]:
    """Group controllers that share a v1 hierarchy (mount options must match an existing one)."""
    hier = _hierarchies()
    groups: dict[Any, list[str]] = {}
    for c in controllers:
        key = hier.get(c, 0) or ("solo", c)
        groups.setdefault(key, []).append(c)
    # a hierarchy may bind more controllers than requested (e.g. cpu,cpuacct): include them all
    for key, members in groups.items():
        if isinstance(key, int):
            members[:] = sorted(n for n, h in hier.items() if h == key)
    return list(groups.values())


FAKE_FILES = {  # seed-catalog §7.1 (Exp 09/10/11 static tree)
    "cpu": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1",
            "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0"},
    "cpuacct": {"cpuacct.usage": "0", "cpuacct.stat": "user 100\nsystem 50", "cpuacct.usage_percpu": "0 0 0 0"},
    "cpuset": {"cpuset.cpus": "0-1", "cpuset.mems": "0"},
    "memory": {"memory.limit_in_bytes": "9223372036854771712", "memory.usage_in_bytes": "209715200",
               "memory.max_usage_in_bytes": "262144000", "memory.soft_limit_in_bytes": "9223372036854771712",
               "memory.stat": "cache 0\nrss 209715200\nrss_huge 0\nmapped_file 0\nswap 0"},
    "pids": {"pids.max": "max", "pids.current": "1"},
}


def write_fake_controller(base: str, controller: str) -> str:
    """A static fake controller directory ``<base>/<controller>`` (seed-catalog §7.1 files, empty
    ``cgroup.procs``/``tasks``), as Exps 10/11 built it; returns its path."""
    src = os.path.join(base, controller)
    os.makedirs(src, exist_ok=True)
    for fname, content in FAKE_FILES.get(controller, {}).items():
        with open(os.path.join(src, fname), "w") as f:
            f.write(content + "\n")
    for fname in ("cgroup.procs", "tasks"):
        open(os.path.join(src, fname), "a").close()
    return src


def cgroup_apply(root: str, controllers: list[str], layout: str) -> dict[str, Any]:
    made_root = not os.path.isdir(root)
    os.makedirs(root, exist_ok=True)
    mounted: list[str] = []
    errors: dict[str, str] = {}
    try:
        mount("tmpfs", root, "tmpfs", 0, "mode=0755,size=16m")
        mounted.append(root)
    except OSError as e:
        if made_root:
            os.rmdir(root)
        return _err(e)
    if layout == "cgroupfs":
        for group in cgroup_groups(controllers):
            name = ",".join(group)
            d = os.path.join(root, name)
            os.makedirs(d, exist_ok=True)
            try:
                mount("cgroup", d, "cgroup", 0, name)
                mounted.append(d)
            except OSError as e:
                errors[name] = str(e)
                continue
            for c in group:
                if c != name:
                    os.symlink(name, os.path.join(root, c))
    else:  # "fake-tmpfs": Exp 11 — tmpfs-backed fake files bind-mounted per controller
        stage = os.path.join(root, ".k3snb-fake")
        for c in controllers:
            src = write_fake_controller(stage, c)
            d = os.path.join(root, c)
            os.makedirs(d, exist_ok=True)
            try:
                mount(src, d, None, MS_BIND)
                mounted.append(d)
            except OSError as e:
                errors[c] = str(e)
    return {"ok": not errors, "mounted": mounted, "made_root": made_root, "errors": errors,
            "root_mount_id": top_mount_id(root)}


def top_mount_id(path: str) -> int | None:
    """Id of the mount currently visible at ``path`` (the last one stacked there)."""
    p = os.path.realpath(path)
    ids = [m.id for m in mountinfo() if m.mountpoint == p]
    return ids[-1] if ids else None


def cgroup_check(root: str, controllers: list[str]) -> dict[str, Any]:
    rows = {}
    for c in controllers:
        d = os.path.join(root, c)
        t = statfs_type(d) if os.path.exists(d) else None
        try:
            files = sorted(os.listdir(d))[:12]
        except OSError:
            files = []
        rows[c] = {"f_type": hex(t) if t is not None else None, "cgroupfs": t == CGROUP_SUPER_MAGIC, "files": files}
    return {"controllers": rows, "root_mount_id": top_mount_id(root)}


def umount_all(paths: list[str]) -> dict[str, Any]:
    errors = []
    for p in reversed(paths):
        try:
            umount(p)
        except OSError as e:
            errors.append(str(e))
    return {"ok": not errors, "errors": errors}


def cleanup_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- commands ------------------------------------------------------------------------------------
def run_cmd(argv: list[str], env: dict[str, str] | None = None, timeout: float = 30) -> dict[str, Any]:
    e = dict(os.environ)
    e.update(env or {})
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env=e, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "returncode": None, "stdout": "", "stderr": str(exc)}
    return {"ok": p.returncode == 0, "returncode": p.returncode, "stdout": p.stdout, "stderr": p.stderr}


def mounts_under(prefixes: list[str]) -> list[str]:
    pre = [os.path.realpath(p) for p in prefixes]
    return [m.mountpoint for m in mountinfo() if any(_under(m.mountpoint, p) and p != "/" for p in pre)]


def umount_under(prefixes: list[str]) -> dict[str, Any]:
    """Detach every mount below the given paths, deepest first (k3s/kubelet/containerd leftovers)."""
    mps = sorted(set(mounts_under(prefixes)), key=len, reverse=True)
    return umount_all(list(reversed(mps))) | {"mounts": mps}


def kill_matching(needles: list[str], pids: list[int], grace: float = 5.0) -> dict[str, Any]:
    """SIGTERM then SIGKILL every process whose cmdline mentions a needle, plus ``pids``' trees."""
    import signal
    import time

    me = os.getpid()
    targets: set[int] = set(pids)
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(pid)
        if any(n and n in cmd for n in needles):
            targets.add(pid)
    stack = list(targets)
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in targets:
                targets.add(c)
                stack.append(c)
    targets.discard(me)
    targets.discard(os.getppid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in targets:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 2)
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") and not _zombie(p) for p in targets):
            time.sleep(0.1)
    return {"ok": True, "killed": sorted(targets)}


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
        return s[s.rindex(b")") + 2 : s.rindex(b")") + 3] == b"Z"
    except (OSError, ValueError):
        return True


def mountpoints() -> list[str]:
    return sorted(m.mountpoint for m in mountinfo())
