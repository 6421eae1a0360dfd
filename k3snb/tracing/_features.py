"""What this kernel (or gVisor's Sentry) offers the tracer, probed at start-up with a tiny traced child."""

from __future__ import annotations

import errno as _errno
import os
import signal
from dataclasses import asdict, dataclass, field

from . import _decode as D
from . import _ptrace as P
from . import _seccomp as S
from ._memory import RED_ZONE_GAP

NEG_ENOSYS = P.to_unsigned(-P.ENOSYS)  # rax at a syscall-entry stop


@dataclass
class Features:
    """What this kernel (or gVisor Sentry) offers the tracer; probed, never assumed."""

    seccomp: bool = False
    seccomp_error: str | None = None
    seccomp_before_entry: bool = False
    mem_write: bool = False
    syscall_info: bool = False
    kernel: str = field(default_factory=lambda: os.uname().release)

    def to_dict(self) -> dict:
        return asdict(self)



def child_prologue() -> None:
    # exec keeps ignored signals ignored: undo Python's SIGPIPE/SIGXFSZ=SIG_IGN like subprocess does
    for s in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def no_ptrace(e: Exception):
    from ..errors import TraceError

    return TraceError(
        f"ptrace is not permitted here ({e})",
        hint="is this process already traced (strace/gdb/another k3snb tracer: ptrace does not nest)? "
             "otherwise check CAP_SYS_PTRACE, kernel.yama.ptrace_scope and the seccomp profile",
    )


def _mem_write_works(pid: int) -> bool:
    # gVisor 2022 lets O_RDWR open succeed (with caps) but pwrite fails with EINVAL: test a write
    try:
        regs = P.getregs(pid)
        addr = (regs.rsp - RED_ZONE_GAP) & ~7
        fd = os.open(f"/proc/{pid}/mem", os.O_RDWR)
        try:
            data = os.pread(fd, 8, addr)
            return os.pwrite(fd, data, addr) == 8
        finally:
            os.close(fd)
    except (OSError, P.PtraceError):
        return False


def probe_features(try_seccomp: bool = True) -> Features:
    """Fork a child that stops on a seccomp-traced ``getppid``; learn the stop order and what works."""
    feats = Features()
    inst = S.Installer(S.build({D.SYSCALL_NUMBERS["getppid"]}, skip_empty_path=False)) if try_seccomp else None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            child_prologue()
            os.kill(os.getpid(), signal.SIGSTOP)
            err = inst.install() if inst else _errno.ENOSYS
            os.write(w, str(err).encode())
            os.close(w)
            os.getppid()
        finally:
            os._exit(0)
    os.close(w)
    try:
        _, st = os.waitpid(pid, os.WUNTRACED)
        try:
            P.seize(pid, P.O_TRACESYSGOOD | P.O_TRACESECCOMP | P.O_EXITKILL)
        except P.PtraceError as e:
            raise no_ptrace(e) from None
        os.kill(pid, signal.SIGCONT)
        stage = 0  # 1 after the seccomp stop (PTRACE_SYSCALL issued)
        while True:
            _, st = os.waitpid(pid, P.WALL)
            if os.WIFEXITED(st) or os.WIFSIGNALED(st):
                break
            sig = os.WSTOPSIG(st)
            ev = st >> 16
            if ev == P.EVENT_SECCOMP:
                feats.seccomp = True
                feats.syscall_info = P.get_syscall_info_works(pid)
                feats.mem_write = _mem_write_works(pid)
                stage = 1
                P.syscall(pid)
            elif sig == P.SYSCALL_TRAP and stage == 1:
                regs = P.getregs(pid)
                # an enter stop still has rax = -ENOSYS; an exit stop has getppid's result
                feats.seccomp_before_entry = regs.rax == NEG_ENOSYS
                stage = 2
                P.cont(pid)
            elif ev == P.EVENT_STOP or sig == signal.SIGCONT or sig == P.SYSCALL_TRAP:
                P.cont(pid)
            else:
                P.cont(pid, sig)
        err = os.read(r, 16).decode() or "?"
        if not feats.seccomp:
            feats.seccomp_error = "no seccomp stop" if err == "0" else _errno.errorcode.get(int(err), err) \
                if err.lstrip("-").isdigit() else err
    finally:
        os.close(r)
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, P.WALL)
        except (ProcessLookupError, ChildProcessError):
            pass
    return feats
