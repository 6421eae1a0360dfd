"""What the probe's checks share: constants, raw libc calls, /proc reads and the forked-child runner."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import time
from typing import Any

from .. import _system

# --- constants ----------------------------------------------------------------------------------




CAP_NAMES = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
]

# The fixed build string every gVisor sentry reports in uname(2) -v.
GVISOR_UNAME_VERSION = "#1 SMP Sun Jan 10 15:06:54 PST 2016"

CGROUP_V1_CONTROLLERS = (
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "pids",
    "devices",
    "freezer",
    "blkio",
    "net_cls",
    "hugetlb",
)

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000

# x86_64 syscall numbers (the kit targets x86_64 only)
SYS_PIVOT_ROOT, SYS_SECCOMP, SYS_STATX = 155, 317, 332
AT_FDCWD, AT_SYMLINK_NOFOLLOW, AT_NO_AUTOMOUNT = -100, 0x100, 0x800

PR_SET_SECCOMP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 22, 36, 38
SECCOMP_MODE_FILTER, SECCOMP_GET_ACTION_AVAIL = 2, 2
SECCOMP_ACTIONS = {
    "kill_process": 0x80000000,
    "kill_thread": 0,
    "trap": 0x00030000,
    "errno": 0x00050000,
    "user_notif": 0x7FC00000,
    "trace": 0x7FF00000,
    "log": 0x7FFC0000,
    "allow": 0x7FFF0000,
}
PTRACE_TRACEME, PTRACE_SYSCALL, PTRACE_KILL = 0, 24, 8

OK = "ok"

_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
        _libc.ptrace.restype = ctypes.c_long
        _libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    return _libc


def _err(e: int) -> str:
    name = errno.errorcode.get(e, str(e))
    return f"{name}: {os.strerror(e)}"


def _rc(ret: int) -> str:
    """Map a libc return value to "ok" or "ERRNAME: text"."""
    return OK if ret >= 0 else _err(ctypes.get_errno())


def _b(s: str | None) -> bytes | None:
    return None if s is None else s.encode()


def _mount(src: str | None, dst: str, fstype: str | None, flags: int = 0, data: str | None = None) -> str:
    try:
        _system.mount(src, dst, fstype, flags, data)
        return OK
    except OSError as e:
        return _err(e.errno or 0)


def _umount(path: str) -> str:
    try:
        _system.umount(path, detach=True)
        return OK
    except OSError as e:
        return _err(e.errno or 0)


def _read(path: str, limit: int = 65536) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode(errors="replace")
    except OSError:
        return None


def _oserr(e: OSError) -> str:
    return _err(e.errno) if e.errno else str(e)


def _run_in_child(fn: Any, timeout: float = 20.0) -> dict[str, Any]:
    """Run ``fn()`` in a forked child (so namespaces, prctls and filters die with it)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            out: Any = {"result": fn()}
        except BaseException as e:  # report, never escape into the parent's code path
            out = {"error": f"{type(e).__name__}: {e}"}
        try:
            data = json.dumps(out, default=str).encode()
        except Exception as e:
            data = json.dumps({"error": f"unserialisable: {e}"}).encode()
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    timed_out = False
    with os.fdopen(r, "rb") as f:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([f], [], [], left)
            if not ready:
                continue
            chunk = os.read(f.fileno(), 65536)
            if not chunk:
                break
            chunks.append(chunk)
    if timed_out:
        with _suppress():
            os.kill(pid, signal.SIGKILL)
    with _suppress():
        os.waitpid(pid, 0)
    if timed_out:
        return {"error": f"timed out after {timeout:.0f}s"}
    try:
        return json.loads(b"".join(chunks) or b'{"error": "child wrote nothing"}')
    except ValueError as e:
        return {"error": f"bad child output: {e}"}


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)  # type: ignore[arg-type]


statfs_magic = _system.statfs_type
