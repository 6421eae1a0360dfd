"""The kit's one stdlib-only system-call module: mount, umount, statfs, mountinfo, signals.

Runs on the host and inside runners (through ``Runner.run_python``), so it imports nothing but the
standard library and :mod:`k3snb._procfs` (the /proc/<pid> readers: process identity and tree).
Raw syscalls via ctypes rather than util-linux: in runsc 2022 GNU coreutils and util-linux fail on
``statx`` and print misleading errors, while raw syscalls return exact errnos (gvisor-matrix §1).
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from ._fsmagic import BY_NAME
from ._procfs import descendants, proc_start, proc_state

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

# statfs f_type values, from the kit's one table
TMPFS_MAGIC = BY_NAME["tmpfs"]
CGROUP_SUPER_MAGIC = BY_NAME["cgroup"]
CGROUP2_SUPER_MAGIC = BY_NAME["cgroup2"]
V9FS_MAGIC = BY_NAME["9p"]
OVERLAYFS_MAGIC = BY_NAME["overlay"]

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.statfs.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        _libc = lib
    return _libc


def _b(s: str | os.PathLike | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


# -- mounts ----------------------------------------------------------------------------------------
def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2); raises OSError carrying the real errno."""
    if _lib().mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r}): {os.strerror(e)}")


def umount(target: str | os.PathLike, detach: bool = True) -> None:
    """umount2(2), lazily (``MNT_DETACH``) by default; raises OSError carrying the real errno."""
    if _lib().umount2(_b(target), MNT_DETACH if detach else 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"umount({os.fspath(target)!r}): {os.strerror(e)}")


def statfs_type(path: str | os.PathLike) -> int | None:
    """``statfs(path).f_type`` (the filesystem magic), or None when statfs fails."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86_64; f_type comes first
    if _lib().statfs(_b(path), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


class Mount(NamedTuple):
    """One line of ``/proc/<pid>/mountinfo`` (proc(5)); paths unescaped."""

    id: int
    parent: int
    dev: str
    root: str
    mountpoint: str
    options: str
    propagation: str  # the optional fields ("shared:1 master:2"); "" for a private mount
    fstype: str
    source: str
    super_options: str


def unescape(field: str) -> str:
    """Undo the kernel's octal escapes in mountinfo fields (``\\040`` space, ``\\011`` tab,
    ``\\012`` newline, ``\\134`` backslash, any other ``\\ooo``) in one pass, so an escaped
    backslash followed by digits is not unescaped twice."""
    if "\\" not in field:
        return field
    raw = os.fsencode(field)
    out = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8) & 0xFF]), raw)
    return os.fsdecode(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo text; malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        a, b = left.split(" "), right.split(" ")
        if not sep or len(a) < 6 or not b[0]:
            continue
        try:
            mid, parent = int(a[0]), int(a[1])
        except ValueError:
            continue
        out.append(Mount(mid, parent, a[2], unescape(a[3]), unescape(a[4]), a[5], " ".join(x for x in a[6:] if x),
                         b[0], unescape(b[1]) if len(b) > 1 else "", b[2] if len(b) > 2 else ""))
    return out


def mountinfo(pid: int | str = "self") -> list[Mount]:
    """The mount table of ``pid`` (default: this process); empty when it cannot be read."""
    try:
        with open(f"/proc/{pid}/mountinfo", "rb") as f:
            return parse_mountinfo(os.fsdecode(f.read()))
    except OSError:
        return []


def is_mountpoint(path: str | os.PathLike, mounts: Iterable[Mount] | None = None) -> bool:
    """Is ``path`` (resolved) a mount point in this mount namespace?"""
    p = os.path.realpath(path)
    return any(m.mountpoint == p for m in (mountinfo() if mounts is None else mounts))


def find_mount(path: str, mounts: Iterable[Mount] | None = None) -> Mount | None:
    """The mount ``path`` lives on: the topmost of those with the longest matching prefix."""
    best, blen = None, -1
    for m in mountinfo() if mounts is None else mounts:
        mp = m.mountpoint
        if (path == mp or path.startswith(mp.rstrip("/") + "/") or mp == "/") and len(mp) >= blen:
            best, blen = m, len(mp)
    return best


def root_fstype() -> str | None:
    """Filesystem type of ``/`` as this process sees it."""
    m = find_mount("/")
    return m.fstype if m else None


# -- signals ---------------------------------------------------------------------------------------
def kill(pid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig``; False when the process is already gone (or not ours to signal)."""
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False when it is gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_tree(pid: int, sig: int = signal.SIGKILL, *, include_self: bool = True) -> list[int]:
    """Signal ``pid``'s descendants (deepest first, so none is re-parented unseen) and then ``pid``;
    returns the pids that were signalled."""
    done = [p for p in reversed(descendants(pid)) if kill(p, sig)]
    if include_self and kill(pid, sig):
        done.append(pid)
    return done


def wait_gone(pids: Iterable[int], limit: float = 3.0) -> list[int]:
    """Wait until the pids have exited (zombies count as gone); returns those still running."""
    pids = list(pids)
    deadline = time.monotonic() + limit
    while True:
        left = [p for p in pids if proc_start(p) is not None and proc_state(p) not in ("Z", "X")]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def pid_matches(pid: int, start: float | None) -> bool:
    """Is ``pid`` still the process that had start time ``start``? (pids are reused; start times not.)"""
    return start is not None and proc_start(pid) == start


def errno_name(e: int) -> str:
    import errno

    return errno.errorcode.get(e, str(e))


def describe_oserror(e: OSError) -> dict[str, Any]:
    """A picklable description of an OSError (for results that travel back from a runner)."""
    return {"ok": False, "errno": errno_name(e.errno or 0), "error": str(e)}


# -- programs --------------------------------------------------------------------------------------
@functools.cache
def _output_cached(path: str, mtime: float, size: int, args: tuple[str, ...], timeout: float) -> tuple[int, str, str]:
    try:
        p = subprocess.run([path, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise TimeoutError(f"{path} {' '.join(args)} did not answer within {timeout:.0f}s") from e
    return p.returncode, p.stdout, p.stderr


def program_output(path: str | os.PathLike, args: Iterable[str] = ("--version",),
                   timeout: float = 30.0) -> tuple[int, str, str]:
    """``(returncode, stdout, stderr)`` of a short query such as ``--version``, run once per binary
    (cached by path, mtime and size, so a replaced binary is asked again).

    Raises:
        OSError: the program cannot be run (missing, not executable) or timed out (TimeoutError).
    """
    st = os.stat(path)
    return _output_cached(os.fspath(path), st.st_mtime, st.st_size, tuple(args), float(timeout))
