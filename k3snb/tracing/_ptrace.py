"""Low-level ptrace layer: python-ptrace's ``ptrace.binding`` plus what it lacks.

python-ptrace 0.9.9 stops at ``PTRACE_O_TRACEEXIT``; SEIZE/INTERRUPT/LISTEN, TRACESECCOMP,
EXITKILL and the seccomp/stop events are added here (numbers from ``linux/ptrace.h``). Only this
module talks to ctypes for ptrace; the engine imports names from here.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import platform
import sys
import types

if "ptrace.ctypes_libc" not in sys.modules:
    # python-ptrace locates libc with ctypes.util.find_library, which runs `ldconfig -p` in a
    # subprocess: tens of ms per tracer start on the host, far more inside gVisor. glibc's soname
    # is fixed on Linux, so provide that module's two names directly.
    _m = types.ModuleType("ptrace.ctypes_libc")
    _m.LIBC_FILENAME = "libc.so.6"
    _m.libc = ctypes.CDLL("libc.so.6", use_errno=True)
    sys.modules["ptrace.ctypes_libc"] = _m

from ptrace.binding import func as _f  # noqa: E402 - after the libc shim above
from ptrace.binding.func import ptrace_getregs as getregs  # noqa: F401, E402 - re-exported
from ptrace.binding.func import ptrace_setregs as setregs  # noqa: F401, E402 - re-exported
from ptrace.error import PtraceError  # noqa: F401, E402 - re-exported

if platform.machine() != "x86_64":  # register names and syscall tables below are x86_64 only
    raise ImportError(f"k3snb.trace supports x86_64 only (this is {platform.machine()})")

ptrace = _f.ptrace

PTRACE_CONT = _f.PTRACE_CONT
PTRACE_SYSCALL = _f.PTRACE_SYSCALL
PTRACE_DETACH = _f.PTRACE_DETACH
PTRACE_POKEDATA = _f.PTRACE_POKEDATA
PTRACE_GETEVENTMSG = _f.PTRACE_GETEVENTMSG
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GET_SYSCALL_INFO = 0x420E

O_TRACESYSGOOD = _f.PTRACE_O_TRACESYSGOOD
O_TRACEFORK = _f.PTRACE_O_TRACEFORK
O_TRACEVFORK = _f.PTRACE_O_TRACEVFORK
O_TRACECLONE = _f.PTRACE_O_TRACECLONE
O_TRACEEXEC = _f.PTRACE_O_TRACEEXEC
O_TRACESECCOMP = 0x80
O_EXITKILL = 0x100000

EVENT_FORK = _f.PTRACE_EVENT_FORK
EVENT_VFORK = _f.PTRACE_EVENT_VFORK
EVENT_CLONE = _f.PTRACE_EVENT_CLONE
EVENT_EXEC = _f.PTRACE_EVENT_EXEC
EVENT_SECCOMP = 7
EVENT_STOP = 128

WALL = 0x40000000  # __WALL: wait for threads and clone children too
SYSCALL_TRAP = 0x85  # SIGTRAP | 0x80 with TRACESYSGOOD
ENOSYS = _errno.ENOSYS

_geteventmsg_buf = ctypes.c_ulong()
_geteventmsg_addr = ctypes.addressof(_geteventmsg_buf)


def seize(pid: int, options: int) -> None:
    ptrace(PTRACE_SEIZE, pid, 0, options)


def interrupt(pid: int) -> None:
    ptrace(PTRACE_INTERRUPT, pid, 0, 0)


def listen(pid: int) -> None:
    ptrace(PTRACE_LISTEN, pid, 0, 0)


def cont(pid: int, sig: int = 0) -> None:
    ptrace(PTRACE_CONT, pid, 0, sig)


def syscall(pid: int, sig: int = 0) -> None:
    ptrace(PTRACE_SYSCALL, pid, 0, sig)


def detach(pid: int, sig: int = 0) -> None:
    ptrace(PTRACE_DETACH, pid, 0, sig)


def geteventmsg(pid: int) -> int:
    # unsigned long: a new tid, a former tid (exec) or the seccomp filter's RET_DATA
    ptrace(PTRACE_GETEVENTMSG, pid, 0, _geteventmsg_addr)
    return _geteventmsg_buf.value


def pokedata(pid: int, addr: int, word: int) -> None:
    ptrace(PTRACE_POKEDATA, pid, addr, word)


def get_syscall_info_works(pid: int) -> bool:
    """Whether PTRACE_GET_SYSCALL_INFO exists here (gVisor 2022 answers EIO)."""
    buf = ctypes.create_string_buffer(88)
    try:
        ptrace(PTRACE_GET_SYSCALL_INFO, pid, 88, ctypes.addressof(buf))
        return True
    except PtraceError:
        return False


def to_signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def to_unsigned(v: int) -> int:
    return v & 0xFFFFFFFFFFFFFFFF


