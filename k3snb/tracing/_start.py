"""Starting the traced tree: fork, seize, seccomp filter and exec; or seize a running process's threads."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence

from ..errors import TraceError
from . import _ptrace as P
from . import _seccomp as S
from ._features import child_prologue
from ._task import Task


class Starter:
    """Engine part: ``spawn`` a command or ``attach`` to a process, with the engine's ptrace options."""

    follow: bool
    use_seccomp: bool
    trace_nrs: set[int]  # what the seccomp filter lets stop
    rules: list  # interception rules (a filter with rules denies foreign-arch syscalls)
    _attached: bool
    tasks: dict[int, Task]
    exe: dict[int, str | None]
    stats: dict[str, int]
    root: int

    def options(self) -> int:
        o = P.O_TRACESYSGOOD | P.O_TRACEEXEC
        if self.follow:
            o |= P.O_TRACEFORK | P.O_TRACEVFORK | P.O_TRACECLONE
        if self.use_seccomp:
            o |= P.O_TRACESECCOMP
        if not self._attached:
            o |= P.O_EXITKILL  # the tree must not outlive us: RET_TRACE without a tracer is ENOSYS
        return o

    def spawn(self, argv: Sequence[str], env: dict | None = None, cwd: str | None = None) -> int:
        inst = S.Installer(S.build(self.trace_nrs, foreign="deny" if self.rules else "trace")) \
            if self.use_seccomp else None
        path = argv[0]
        env = dict(os.environ if env is None else env)
        pid = os.fork()
        if pid == 0:
            try:
                child_prologue()
                if cwd:
                    os.chdir(cwd)
                os.kill(os.getpid(), signal.SIGSTOP)  # wait until the tracer has seized us
                if inst is not None:
                    err = inst.install()
                    if err:
                        os.write(2, f"k3snb.trace: seccomp filter: {os.strerror(err)}\n".encode())
                        os._exit(126)
                os.execve(path, list(argv), env)
            except BaseException as e:  # noqa: BLE001 - report anything, then leave without cleanup
                try:
                    os.write(2, f"k3snb.trace: cannot execute {path}: {e}\n".encode())
                finally:
                    os._exit(127)
        try:
            _, st = os.waitpid(pid, os.WUNTRACED)
            if not os.WIFSTOPPED(st):
                raise TraceError(f"the child for {path} exited before exec (status {st:#x})",
                                 hint="see the 'k3snb.trace: cannot execute' line above")
            P.seize(pid, self.options())
        except BaseException as e:
            # never leave the child stopped and untraced behind us (also on Ctrl-C)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            if isinstance(e, P.PtraceError):
                raise TraceError(f"cannot trace {path}: {os.strerror(e.errno) if e.errno else e}",
                                 hint="the tracer needs CAP_SYS_PTRACE and no other tracer on it; check "
                                      "kernel.yama.ptrace_scope and the seccomp profile") from None
            raise
        self.root = pid
        t = Task(pid, ppid=os.getpid())
        t.tgid = pid
        self.tasks[pid] = t
        self.exe[pid] = path
        self.stats["tasks"] += 1
        os.kill(pid, signal.SIGCONT)
        return pid

    def attach(self, pid: int) -> list[int]:
        """Seize every thread of a running process and interrupt it (no seccomp: it is already running)."""
        from ..errors import InvalidParameter

        self._attached = True
        self.use_seccomp = False
        try:
            tids = sorted(int(x) for x in os.listdir(f"/proc/{pid}/task"))
        except OSError:
            raise InvalidParameter(f"no process with pid {pid}", hint="check the pid with `ps -p PID`") from None
        if pid == os.getpid():
            raise InvalidParameter("the tracer cannot attach to itself", hint="pass another process's pid")
        try:
            for tid in tids:
                P.seize(tid, self.options())
                t = Task(tid)
                t.tgid = pid
                self.tasks[tid] = t
                P.interrupt(tid)
        except P.PtraceError as e:
            self._detach_all()  # let go of the threads already seized
            why = os.strerror(e.errno) if e.errno else str(e)
            raise TraceError(
                f"cannot attach to pid {pid}: {why}",
                hint="attach to a process of your own that no debugger (strace, gdb, another k3snb tracer) "
                     "traces, not pid 1 of a namespace or an ancestor of the tracer; else check "
                     "CAP_SYS_PTRACE, kernel.yama.ptrace_scope and the seccomp profile",
            ) from None
        self.root = pid
        try:
            self.exe[pid] = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            self.exe[pid] = "?"
        self.stats["tasks"] += len(tids)
        return tids
