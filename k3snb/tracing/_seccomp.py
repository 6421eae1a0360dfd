"""Classic-BPF seccomp filter builder: stop (``SECCOMP_RET_TRACE``) only on the syscalls we need.

The program is built in the tracer *before* fork, so the forked child only has to call
``prctl``/``seccomp`` and exec. Layout::

    arch != x86_64            -> FOREIGN (RET_TRACE|2 when tracing, ENOSYS when intercepting)
    nr >= 0x40000000 (x32)    -> FOREIGN
    nr in skip_empty_path and flags & AT_EMPTY_PATH -> ALLOW   (glibc fstat(); nothing to rewrite)
    nr in traced              -> TRACE (RET_DATA 1)
    else                      -> ALLOW
"""

from __future__ import annotations

import ctypes
import errno as _errno
import struct

# linux/filter.h, linux/seccomp.h, linux/audit.h
BPF_LD, BPF_W, BPF_ABS = 0x00, 0x00, 0x20
BPF_JMP, BPF_JEQ, BPF_JGE, BPF_JSET, BPF_K = 0x05, 0x10, 0x30, 0x40, 0x00
BPF_RET = 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_ERRNO = 0x00050000
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
AT_EMPTY_PATH = 0x1000
DATA_NATIVE = 1
DATA_FOREIGN = 2
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

# flags-argument index of the fstat-like calls glibc issues with ("", AT_EMPTY_PATH)
EMPTY_PATH_FLAG_ARG = {262: 3, 332: 2}  # newfstatat, statx


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _arg_lo(i: int) -> int:
    return 16 + 8 * i  # offsetof(struct seccomp_data, args[i]), low word on little-endian


def build(traced: set[int], *, skip_empty_path: bool = True, foreign: str = "trace") -> list[tuple]:
    """Return the program as (code, jt, jf, k) tuples. ``foreign``: "trace" or "deny"."""
    traced = {n for n in traced if 0 <= n < X32_SYSCALL_BIT}
    # instructions with symbolic targets; resolved below
    prog: list[list] = []
    ret_foreign = (
        SECCOMP_RET_TRACE | DATA_FOREIGN if foreign == "trace" else SECCOMP_RET_ERRNO | _errno.ENOSYS
    )
    prog.append([BPF_LD | BPF_W | BPF_ABS, 0, 0, 4])  # arch
    prog.append([BPF_JMP | BPF_JEQ | BPF_K, 0, "FOREIGN", AUDIT_ARCH_X86_64])
    prog.append([BPF_LD | BPF_W | BPF_ABS, 0, 0, 0])  # nr
    prog.append([BPF_JMP | BPF_JGE | BPF_K, "FOREIGN", 0, X32_SYSCALL_BIT])
    specials = sorted(n for n in traced if skip_empty_path and n in EMPTY_PATH_FLAG_ARG)
    for n in specials:
        # jeq n -> look at the flags; else skip the 2-instruction check (A still holds nr)
        prog.append([BPF_JMP | BPF_JEQ | BPF_K, 0, 2, n])
        prog.append([BPF_LD | BPF_W | BPF_ABS, 0, 0, _arg_lo(EMPTY_PATH_FLAG_ARG[n])])
        prog.append([BPF_JMP | BPF_JSET | BPF_K, "ALLOW", "TRACE", AT_EMPTY_PATH])
    for n in sorted(traced - set(specials)):
        prog.append([BPF_JMP | BPF_JEQ | BPF_K, "TRACE", 0, n])
    labels = {}
    labels["ALLOW"] = len(prog)
    prog.append([BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW])
    labels["TRACE"] = len(prog)
    prog.append([BPF_RET | BPF_K, 0, 0, SECCOMP_RET_TRACE | DATA_NATIVE])
    labels["FOREIGN"] = len(prog)
    prog.append([BPF_RET | BPF_K, 0, 0, ret_foreign])
    out = []
    for i, (code, jt, jf, k) in enumerate(prog):
        if isinstance(jt, str):
            jt = labels[jt] - i - 1
        if isinstance(jf, str):
            jf = labels[jf] - i - 1
        if not (0 <= jt <= 255 and 0 <= jf <= 255):  # cBPF jump offsets are one byte
            raise ValueError("seccomp filter too long for 8-bit jumps; trace fewer syscalls")
        out.append((code, jt, jf, k))
    return out


def pack(prog: list[tuple]) -> bytes:
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


class Installer:
    """Holds the ctypes program and libc handle so the forked child only makes two calls."""

    def __init__(self, prog: list[tuple]) -> None:
        self._arr = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
        self._fprog = _SockFprog(len(prog), self._arr)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._prctl = self._libc.prctl
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        self._addr = ctypes.addressof(self._fprog)

    def install(self) -> int:
        """Load the filter into the calling process; returns 0 or an errno. No-new-privs only if needed."""
        if self._prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self._addr, 0, 0) == 0:
            return 0
        err = ctypes.get_errno()
        if err != _errno.EACCES:
            return err
        # without CAP_SYS_ADMIN the kernel demands no_new_privs (disables setuid gains in the tree)
        if self._prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return ctypes.get_errno()
        if self._prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self._addr, 0, 0) == 0:
            return 0
        return ctypes.get_errno()
