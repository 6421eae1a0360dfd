"""Checks that try things in a forked child (so namespaces, prctls and filters die with it):
seccomp, prctl, user namespaces, ptrace, iptables, mounts, pivot_root, FUSE."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from typing import Any

from .._system import (
    MS_BIND,
    MS_MOVE,
    MS_NODEV,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
)

# --- constants ----------------------------------------------------------------------------------
from ._probe_lib import (
    CGROUP_V1_CONTROLLERS,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUSER,
    OK,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_SECCOMP,
    PTRACE_SYSCALL,
    PTRACE_TRACEME,
    SECCOMP_ACTIONS,
    SECCOMP_GET_ACTION_AVAIL,
    SECCOMP_MODE_FILTER,
    SYS_PIVOT_ROOT,
    SYS_SECCOMP,
    _b,
    _c,
    _err,
    _mount,
    _oserr,
    _rc,
    _read,
    _run_in_child,
    _suppress,
    _umount,
)
from ._probe_passive import _sbin, _status, parse_mountinfo


def _seccomp_actions() -> dict[str, str]:
    out = {}
    for name, action in SECCOMP_ACTIONS.items():
        a = ctypes.c_uint32(action)
        ret = _c().syscall(
            ctypes.c_long(SYS_SECCOMP),
            ctypes.c_uint(SECCOMP_GET_ACTION_AVAIL),
            ctypes.c_uint(0),
            ctypes.byref(a),
        )
        out[name] = _rc(ret)
    return out


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _child_seccomp() -> dict[str, Any]:
    c = _c()
    out = {"set_no_new_privs": _rc(c.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))}
    insns = (_SockFilter * 1)(_SockFilter(0x06, 0, 0, SECCOMP_ACTIONS["allow"]))  # BPF_RET|BPF_K ALLOW
    prog = _SockFprog(1, insns)
    out["filter_install"] = _rc(c.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0))
    out["mode_after"] = _status().get("Seccomp")
    return out


def _child_misc() -> dict[str, Any]:
    c = _c()
    return {"subreaper": _rc(c.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))}


def _child_userns() -> dict[str, Any]:
    res = _rc(_c().unshare(CLONE_NEWUSER))
    out: dict[str, Any] = {"unshare_user": res}
    if res == OK:
        out["uid_map_after"] = (_read("/proc/self/uid_map") or "").strip()
    return out


def _ptrace() -> dict[str, Any]:
    """PTRACE_TRACEME in a child, then one PTRACE_SYSCALL stop, then kill it."""
    c = _c()
    out: dict[str, Any] = {"traceme": None, "syscall_stop": None}
    pid = os.fork()
    if pid == 0:
        if c.ptrace(PTRACE_TRACEME, 0, None, None) != 0:
            os._exit(3)
        os.kill(os.getpid(), signal.SIGSTOP)
        os.getppid()
        os._exit(0)
    try:
        _, st = os.waitpid(pid, 0)
        if os.WIFEXITED(st):
            out["traceme"] = f"child exited {os.WEXITSTATUS(st)} (PTRACE_TRACEME failed)"
            return out
        if not (os.WIFSTOPPED(st) and os.WSTOPSIG(st) == signal.SIGSTOP):
            out["traceme"] = f"unexpected wait status {st:#x}"
            return out
        out["traceme"] = OK
        if c.ptrace(PTRACE_SYSCALL, pid, None, None) != 0:
            out["syscall_stop"] = _err(ctypes.get_errno())
            return out
        _, st = os.waitpid(pid, 0)
        out["syscall_stop"] = (
            OK if os.WIFSTOPPED(st) and os.WSTOPSIG(st) == signal.SIGTRAP else f"status {st:#x}"
        )
        return out
    finally:
        with _suppress():
            os.kill(pid, signal.SIGKILL)
        with _suppress():
            os.waitpid(pid, 0)


def _child_iptables(gvisor: bool) -> dict[str, Any]:
    import socket

    out: dict[str, Any] = {}
    res = _rc(_c().unshare(CLONE_NEWNET))
    if res == OK:
        out["netns"] = "private (unshare CLONE_NEWNET)"
        # a fresh netns has lo down; nothing needs it up for listing
    elif gvisor:
        out["netns"] = f"sandbox netns (unshare failed: {res})"
    else:
        out["netns"] = f"skipped: no private netns ({res})"
        return out
    for name, args in (
        ("raw_socket", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)),
        ("netlink_netfilter", (socket.AF_NETLINK, socket.SOCK_RAW, 12)),
    ):
        try:
            socket.socket(*args).close()
            out[name] = OK
        except OSError as e:
            out[name] = _oserr(e)
    for variant in ("legacy", "nft"):
        exe = _sbin(f"iptables-{variant}")
        if exe is None:
            out[variant] = {"filter": "not installed", "nat": "not installed"}
            continue
        out[variant] = {}
        for table in ("filter", "nat"):
            try:
                p = subprocess.run(
                    [exe, "-w", "5", "-t", table, "-S"], capture_output=True, text=True, timeout=15
                )
                text = (p.stderr or p.stdout).strip().splitlines()
                out[variant][table] = (
                    OK if p.returncode == 0 else f"rc={p.returncode}: {text[-1] if text else ''}"
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                out[variant][table] = str(e)
    return out


def _isolated_mount_ns() -> tuple[bool, str, str]:
    """Enter a fresh mount namespace from which no mount can propagate out.

    Returns (isolated, how, result of making / rprivate).
    """
    res = _rc(_c().unshare(CLONE_NEWNS))
    if res != OK:
        return False, f"unshare(CLONE_NEWNS): {res}", "skipped"
    rp = _mount("none", "/", None, MS_REC | MS_PRIVATE)
    if rp == OK:
        return True, "fresh mount ns, / made rprivate", rp
    shared = [
        m for m in parse_mountinfo(_read("/proc/self/mountinfo") or "") if "shared:" in m["propagation"]
    ]
    if not shared:
        return True, "fresh mount ns without shared peer groups", rp
    return False, f"{len(shared)} mounts are shared and / cannot be made rprivate", rp


def _child_mounts(allow_new_cgroup: bool, v1_mounted: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ok, how, out["make_rprivate_root"] = _isolated_mount_ns()
    out["isolation"] = how
    if not ok:
        out["skipped"] = "mount namespace could not be isolated"
        return out
    scratch = "/tmp" if os.path.isdir("/tmp") else "/mnt"
    out["scratch"] = _mount("k3snb-probe", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0700")
    if out["scratch"] != OK:
        return out
    j = lambda *p: os.path.join(scratch, *p)  # noqa: E731
    try:
        for d in ("src", "src/sub", "b", "rb", "mv1", "mv2", "ro", "l", "u", "w", "m", "pr", "fuse"):
            os.makedirs(j(d), exist_ok=True)
        out["tmpfs"] = _mount("tmpfs", j("src", "sub"), "tmpfs", 0, "size=1m")
        out["bind"] = _mount(j("src"), j("b"), None, MS_BIND)
        out["rbind"] = _mount(j("src"), j("rb"), None, MS_BIND | MS_REC)
        out["bind_remount_ro"] = (
            _mount(None, j("b"), None, MS_REMOUNT | MS_BIND | MS_RDONLY)
            if out["bind"] == OK
            else "skipped (bind failed)"
        )
        _mount("tmpfs", j("ro"), "tmpfs", 0, "size=1m")
        out["remount_ro"] = _mount(None, j("ro"), None, MS_REMOUNT | MS_RDONLY)
        out["make_shared_submount"] = _mount(None, scratch, None, MS_SHARED)
        mi = parse_mountinfo(_read("/proc/self/mountinfo") or "")
        sm = [m for m in mi if m["mountpoint"] == scratch]
        out["shared_tag_visible"] = bool(sm and "shared:" in sm[-1]["propagation"])
        out["make_slave_submount"] = _mount(None, scratch, None, MS_SLAVE)
        out["make_rshared_root"] = _mount(None, "/", None, MS_REC | MS_SHARED)
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _mount("tmpfs", j("mv1"), "tmpfs", 0, "size=1m")
        out["move"] = _mount(j("mv1"), j("mv2"), None, MS_MOVE)
        out["overlay"] = _mount(
            "overlay", j("m"), "overlay", 0, f"lowerdir={j('l')},upperdir={j('u')},workdir={j('w')}"
        )
        out["pivot_root"] = _pivot_root_test(j("pr"))
        cg: dict[str, str] = {}
        for ctrl in CGROUP_V1_CONTROLLERS:
            if not allow_new_cgroup and ctrl not in v1_mounted:
                cg[ctrl] = "skipped (not mounted on this host; would create a hierarchy)"
                continue
            d = j("cg-" + ctrl)
            os.makedirs(d, exist_ok=True)
            cg[ctrl] = _mount("cgroup", d, "cgroup", 0, ctrl)
            if cg[ctrl] == OK:
                _umount(d)
        d = j("cg2")
        os.makedirs(d, exist_ok=True)
        cg["cgroup2"] = _mount("cgroup2", d, "cgroup2", 0, None)
        if cg["cgroup2"] == OK:
            _umount(d)
        out["cgroup_mount"] = cg
        out["fuse"] = _fuse_test(j("fuse"))
    finally:
        _umount(scratch)
    return out


def _pivot_root_test(new_root: str) -> str:
    # In a grandchild with its own mount ns, so only that process ever sees the new root.
    def inner() -> str:
        res = _rc(_c().unshare(CLONE_NEWNS))
        if res != OK:
            return f"skipped (unshare: {res})"
        r = _mount("tmpfs", new_root, "tmpfs", 0, "size=1m")
        if r != OK:
            return f"skipped (tmpfs: {r})"
        os.mkdir(os.path.join(new_root, "old"))
        return _rc(
            _c().syscall(ctypes.c_long(SYS_PIVOT_ROOT), _b(new_root), _b(os.path.join(new_root, "old")))
        )

    res = _run_in_child(inner, timeout=10)
    return res.get("result") or res.get("error", "?")


def _fuse_test(target: str) -> str:
    try:
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return "open /dev/fuse: " + _oserr(e)
    try:
        res = _mount(
            "k3snb-probe",
            target,
            "fuse",
            MS_NOSUID | MS_NODEV,
            f"fd={fd},rootmode=40000,user_id=0,group_id=0",
        )
        if res == OK:
            _umount(target)
        return res
    finally:
        os.close(fd)
