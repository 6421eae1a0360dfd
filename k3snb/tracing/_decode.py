"""Syscall tables and decoding (x86_64): names, path arguments, categories, flag/errno names.

Numbers come from ``_syscall_table`` (generated from the kernel's UAPI header by
``scripts/gen_syscall_table.py``, sources named in it); the path-argument map below is ours: for
every path-taking syscall, which argument holds a path and which argument is the directory fd it
is relative to (``None`` = the cwd).
"""

from __future__ import annotations

import errno as _errno
import os
import signal as _signal

from .._fsmagic import BY_NAME
from . import _syscall_table

SYSCALL_NAMES: dict[int, str] = dict(_syscall_table.SYSCALL_NAMES)
SYSCALL_NUMBERS: dict[str, int] = {v: k for k, v in SYSCALL_NAMES.items()}

AT_FDCWD = -100

# nr -> ((path_arg, dirfd_arg or None), ...)
PATH_ARGS: dict[int, tuple[tuple[int, int | None], ...]] = {}


def _p(names: str, *spec: tuple[int, int | None]) -> None:
    for n in names.split():
        PATH_ARGS[SYSCALL_NUMBERS[n]] = spec


_p("open creat stat lstat access readlink execve truncate chdir mkdir rmdir unlink chmod chown "
   "lchown utime utimes mknod statfs chroot setxattr lsetxattr getxattr lgetxattr listxattr "
   "llistxattr removexattr lremovexattr umount2 acct swapon swapoff uselib", (0, None))
_p("rename link pivot_root", (0, None), (1, None))
_p("symlink", (1, None))  # arg 0 is the link's content, not a path to resolve
_p("mount", (0, None), (1, None))
_p("inotify_add_watch", (1, None))
_p("openat mkdirat mknodat fchownat futimesat newfstatat unlinkat readlinkat fchmodat faccessat "
   "utimensat name_to_handle_at execveat statx open_tree fspick openat2 faccessat2 fchmodat2", (1, 0))
_p("renameat linkat renameat2 move_mount", (1, 0), (3, 2))
_p("symlinkat", (2, 1))
_p("fanotify_mark", (4, 3))

STATFS_NR = SYSCALL_NUMBERS["statfs"]
FSTATFS_NR = SYSCALL_NUMBERS["fstatfs"]

# fd-taking syscalls: first argument is an fd (decoded as "fd" in traces)
_FD_FIRST = set(
    ["read", "write", "close", "fstat", "lseek", "ioctl", "pread64", "pwrite64", "readv", "writev", "fsync", "fdatasync", "ftruncate", "getdents", "getdents64", "fchdir", "fchmod", "fchown", "fstatfs", "flock", "fcntl", "dup", "dup2", "dup3", "sendfile", "connect", "accept", "accept4", "bind", "listen", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown", "getsockname", "getpeername", "setsockopt", "getsockopt", "fgetxattr", "fsetxattr", "flistxattr", "fremovexattr", "fadvise64", "epoll_ctl", "sync_file_range", "syncfs", "setns", "fallocate"]
)
FD_FIRST_NRS = {SYSCALL_NUMBERS[n] for n in _FD_FIRST if n in SYSCALL_NUMBERS}

# strace-like classes, usable as ``syscalls=["%file", "%process"]``
CATEGORIES: dict[str, set[int]] = {
    "file": set(PATH_ARGS),
    "process": {SYSCALL_NUMBERS[n] for n in
                ["fork", "vfork", "clone", "clone3", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "kill", "tkill", "tgkill", "unshare", "setns"]},
    "network": {SYSCALL_NUMBERS[n] for n in
                ["socket", "socketpair", "connect", "accept", "accept4", "bind", "listen", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown", "getsockname", "getpeername", "setsockopt", "getsockopt", "sendmmsg", "recvmmsg"]},
    "desc": FD_FIRST_NRS | {SYSCALL_NUMBERS[n] for n in ["open", "openat", "openat2", "creat", "pipe", "pipe2", "eventfd2", "memfd_create"]},
    "mount": {SYSCALL_NUMBERS[n] for n in
              ["mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr"]},
    "statfs": {STATFS_NR, FSTATFS_NR},
    "signal": {SYSCALL_NUMBERS[n] for n in
               ["rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "kill", "tkill", "tgkill", "rt_sigqueueinfo", "sigaltstack", "pause", "rt_sigsuspend"]},
}

# kernel-internal restart codes a tracer sees at exit stops (include/linux/errno.h)
ERRNO_NAMES = {**_errno.errorcode, 512: "ERESTARTSYS", 513: "ERESTARTNOINTR", 514: "ERESTARTNOHAND",
               516: "ERESTART_RESTARTBLOCK"}
FSTYPES = BY_NAME  # statfs f_type magic numbers by name (k3snb/_fsmagic.py)

_OPEN_FLAGS = [(getattr(os, n), n) for n in (
    "O_WRONLY", "O_RDWR", "O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC", "O_APPEND", "O_NONBLOCK",
    "O_DSYNC", "O_DIRECT", "O_LARGEFILE", "O_DIRECTORY", "O_NOFOLLOW", "O_NOATIME", "O_CLOEXEC",
    "O_PATH", "O_TMPFILE") if hasattr(os, n)]
_OPEN_FLAGS = [(v, n) for v, n in _OPEN_FLAGS if n != "O_TMPFILE"]
OPEN_FLAG_ARG = {SYSCALL_NUMBERS["open"]: 1, SYSCALL_NUMBERS["openat"]: 2}  # nr -> index of the flags argument


def resolve_syscalls(spec) -> set[int] | None:
    """``None`` -> None (all). Names, numbers and ``%category`` strings -> a set of numbers."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    out: set[int] = set()
    for s in spec:
        if isinstance(s, int):
            out.add(s)
            continue
        name = s.lstrip("%")
        if s.startswith("%") or (name in CATEGORIES and name not in SYSCALL_NUMBERS):
            if name not in CATEGORIES:
                from ..errors import InvalidParameter

                raise InvalidParameter(
                    f"unknown syscall category {s!r}; valid: {', '.join('%' + c for c in sorted(CATEGORIES))}",
                    hint="use a category such as '%file' or plain syscall names",
                )
            out |= CATEGORIES[name]
        elif name in SYSCALL_NUMBERS:
            out.add(SYSCALL_NUMBERS[name])
        else:
            from ..errors import InvalidParameter

            close = sorted(n for n in SYSCALL_NUMBERS if n.startswith(name[:3]))[:8]
            raise InvalidParameter(
                f"unknown syscall {s!r}" + (f"; similar: {', '.join(close)}" if close else ""),
                hint="use x86_64 syscall names (openat, newfstatat, statx …) or '%file'",
            )
    return out


def open_flags(v: int) -> str:
    acc = v & 3
    parts = ["O_RDONLY" if acc == 0 else "O_WRONLY" if acc == 1 else "O_RDWR" if acc == 2 else "O_ACC3"]
    rest = v & ~3
    for bit, name in _OPEN_FLAGS:
        if bit > 2 and rest & bit:
            parts.append(name)
            rest &= ~bit
    if rest:
        parts.append(hex(rest))
    return "|".join(parts)


def errno_name(ret: int) -> str | None:
    if -4096 < ret < 0:
        return ERRNO_NAMES.get(-ret, f"E{-ret}")
    return None


def signal_name(sig: int) -> str:
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"SIG{sig}"


def fd_arg(nr: int, args) -> int | None:
    if nr in FD_FIRST_NRS:
        return _s32(args[0])
    spec = PATH_ARGS.get(nr)
    if spec and spec[0][1] is not None:
        return _s32(args[spec[0][1]])
    return None


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def name(nr: int) -> str:
    return SYSCALL_NAMES.get(nr, f"syscall_{nr}")
