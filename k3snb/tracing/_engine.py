"""The tracer's wait loop: one ``waitpid(-1, __WALL)`` over the whole traced tree, dispatching each stop.

Runs in its own process (``python -m k3snb.tracing``), never inside a notebook kernel: a
``waitpid(-1)`` there would reap the kernel's other children, and ptrace binds tracees to the
thread that attached them. Design rules from ptrace-feasibility.md §7:

* attach with ``PTRACE_SEIZE`` (job control keeps working: group-stops get ``PTRACE_LISTEN``);
* options TRACESYSGOOD|FORK|VFORK|CLONE|EXEC|SECCOMP|EXITKILL — the tree dies with the tracer;
* seccomp ``RET_TRACE`` so only needed syscalls stop; the stop order (Linux >= 4.8: seccomp stop
  then exit stop; gVisor 2022: seccomp, *enter*, exit) is probed at start-up, not assumed;
* rewritten strings go below the red zone, 16-byte aligned; the argument register is restored at
  the exit stop (a syscall restarted after a signal re-reads it);
* memory is read with ``pread(/proc/tid/mem)`` and written with ``pwrite`` where the kernel allows
  it, else ``PTRACE_POKEDATA`` (gVisor refuses O_RDWR on /proc/pid/mem).

The :class:`Engine` is assembled from parts, one module per job: ``_start`` (spawn/attach),
``_policy`` (entry/exit decisions, using ``_match`` rules, ``_memory`` and ``_resolve``),
``_rows`` (recording), ``_signals`` (forwarding, grace, detach); ``_features`` probes the kernel.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import signal
import time
from collections.abc import Callable, Sequence

from . import _decode as D
from . import _ptrace as P
from ._features import NEG_ENOSYS, Features, probe_features
from ._match import RuleSet
from ._memory import Memory
from ._policy import Policy
from ._rows import ROW_FIELDS, Recorder
from ._rules import Rule
from ._signals import GRACE, SignalHandling, StopAttach, exit_like
from ._start import Starter
from ._task import EXPECT_ENTER, EXPECT_EXIT, EXPECT_NONE, Task

__all__ = ["Engine", "Features", "exit_like", "probe_features"]

GROUP_STOP_SIGS = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}


class Engine(Policy, Recorder, Starter, SignalHandling):
    """Run (or attach to) a process tree under ptrace, applying ``rules`` and recording rows.

    Args:
        rules: interception rules (already materialised: ``fake`` rules turned into redirects).
        syscalls: syscall numbers to record (``None`` = all, ``set()`` = none, only rewrites/events).
        record: a callable taking one row tuple (see ``ROW_FIELDS``), or None.
        seccomp: True/False/None (auto: use it when the kernel allows and not recording everything).
        follow: follow fork/vfork/clone children.
        linger: after the root exits, SIGKILL what is left after this many seconds (None = wait).
        grace: after a forwarded SIGTERM/SIGINT/SIGHUP/SIGQUIT, SIGKILL what is left after this
            many seconds (None = wait for the tree to obey).
    """

    ROW_FIELDS = ROW_FIELDS

    def __init__(self, rules: Sequence[Rule] = (), *, syscalls: set[int] | frozenset[int] | None = frozenset(),
                 record: Callable[[tuple], None] | None = None, seccomp: bool | None = None,
                 follow: bool = True, linger: float | None = None, features: Features | None = None,
                 log: Callable[[str], None] | None = None, grace: float | None = GRACE) -> None:
        self.rules = list(rules)
        self.grace = grace
        self.syscalls = syscalls
        self.record = record
        self.follow = follow
        self.linger = linger
        self.log = log
        self.ruleset = RuleSet(self.rules)
        want_all = record is not None and syscalls is None
        # what the seccomp filter lets stop: what the rules need, plus the syscalls to record
        self.trace_nrs = self.ruleset.stop_nrs() | (set(syscalls) if record is not None and syscalls else set())
        if seccomp is None:
            seccomp = not want_all
        if want_all:
            seccomp = False  # every syscall stops anyway; a filter would only add a stop
        self.features = features or probe_features()
        self.mem = Memory(self.features)
        self.use_seccomp = bool(seccomp and self.features.seccomp)
        self.tasks: dict[int, Task] = {}
        self.exe: dict[int, str | None] = {}
        self.root = 0
        self.root_status: int | None = None
        self.t_start = time.monotonic()
        self.stats = {"stops": 0, "syscalls": 0, "rewrites": 0, "statfs_spoofed": 0, "errno_forced": 0,
                      "tasks": 0, "execs": 0}
        self._forwarded = 0
        self._sent_sig = 0  # the last signal forwarded to the tree (sent to late children too)
        self._attached = False
        self._root_cont_seen = False


    def _resume(self, t: Task, sig: int = 0) -> None:
        if not self.use_seccomp or t.expect != EXPECT_NONE:
            P.syscall(t.tid, sig)
        else:
            P.cont(t.tid, sig)

    def _forget(self, tid: int) -> Task | None:
        t = self.tasks.pop(tid, None)
        if t is not None:
            Memory.close(t)
        return t

    def loop(self, until: float | None = None) -> int | None:
        """Run until no traced task is left (or ``until``, a monotonic deadline, in attach mode)."""
        with self.signals_handled(until):
            try:
                self._loop()
            except StopAttach:
                self._in_wait = False
                self._detach_all()
            except BaseException:
                if not self._attached:
                    self.kill_all()
                    self._reap_rest()
                raise
            finally:
                for tid in list(self.tasks):
                    self._forget(tid)
        return self.root_status

    def _reap_rest(self) -> None:
        deadline = time.monotonic() + 5
        while self.tasks and time.monotonic() < deadline:
            try:
                tid, st = os.waitpid(-1, P.WALL)
            except ChildProcessError:
                break
            if os.WIFEXITED(st) or os.WIFSIGNALED(st):
                self._forget(tid)

    def _loop(self) -> None:
        tasks = self.tasks
        use_seccomp = self.use_seccomp
        before_entry = self.features.seccomp_before_entry
        stats = self.stats
        PtraceError = P.PtraceError
        while tasks:
            if self._attached and self._stop_attach:
                self._detach_all()
                return
            self._in_wait = True
            try:
                tid, st = os.waitpid(-1, P.WALL)
            except ChildProcessError:
                return
            finally:
                self._in_wait = False
            stats["stops"] += 1
            t = tasks.get(tid)
            if os.WIFEXITED(st) or os.WIFSIGNALED(st):
                if t is None:
                    continue
                if os.WIFEXITED(st):
                    self._event(t, "exit", os.WEXITSTATUS(st))
                else:
                    self._event(t, "killed", -os.WTERMSIG(st), D.signal_name(os.WTERMSIG(st)))
                self._forget(tid)
                if tid == self.root:
                    self.root_status = st
                    if self.linger is not None and tasks:
                        self._arm_kill(self.linger)
                continue
            if t is None:  # an auto-attached child can report before its parent's fork event
                t = Task(tid)
                tasks[tid] = t
                stats["tasks"] += 1
            sig = os.WSTOPSIG(st)
            ev = st >> 16
            try:
                if sig == P.SYSCALL_TRAP:
                    regs = P.getregs(tid)
                    if use_seccomp:
                        if t.expect == EXPECT_ENTER:
                            t.expect = EXPECT_EXIT
                            P.syscall(tid)
                        elif t.expect == EXPECT_EXIT:
                            t.expect = EXPECT_NONE
                            self.on_exit(t, regs)
                            P.cont(tid)
                        else:
                            P.cont(tid)
                    else:
                        # entry stops have rax = -ENOSYS; after an attach we may first see an exit
                        if not t.in_sys and regs.rax == NEG_ENOSYS:
                            t.in_sys = True
                            if not self.on_entry(t, regs):
                                t.nr = -1
                        else:
                            t.in_sys = False
                            if t.nr >= 0:
                                self.on_exit(t, regs)
                            t.nr = -1
                        P.syscall(tid)
                elif ev == P.EVENT_SECCOMP:
                    regs = P.getregs(tid)
                    if self.on_entry(t, regs):
                        t.expect = EXPECT_ENTER if before_entry else EXPECT_EXIT
                        P.syscall(tid)
                    else:
                        P.cont(tid)
                elif ev == 0:
                    # signal-delivery-stop: give the signal back (never swallow it)
                    if sig == signal.SIGSTOP and not t.started:
                        t.started = True
                        self._resume(t)
                    elif sig == signal.SIGCONT and tid == self.root and not self._root_cont_seen:
                        self._root_cont_seen = True  # our own SIGCONT from the seize handshake
                        self._resume(t, sig)
                    else:
                        if self.record is not None:
                            self._event(t, "signal", sig, D.signal_name(sig))
                        self._resume(t, sig)
                elif ev == P.EVENT_STOP:
                    if not t.started:
                        t.started = True
                        self._resume(t)
                    elif sig in GROUP_STOP_SIGS:
                        P.listen(tid)  # keep it stopped (job control) without blocking our loop
                    else:
                        self._resume(t)
                elif ev in (P.EVENT_FORK, P.EVENT_VFORK, P.EVENT_CLONE):
                    new = P.geteventmsg(tid)
                    child = tasks.get(new)
                    if child is None:
                        child = Task(new)
                        tasks[new] = child
                        stats["tasks"] += 1
                    if ev != P.EVENT_CLONE:
                        child.tgid = new  # fork/vfork children are processes; clone may be a thread
                    if self._sent_sig:
                        self._late_signal(child)
                    if self.record is not None:
                        child.ppid = self._tgid(t)
                        cpid = self._tgid(child)
                        if cpid not in self.exe:
                            self.exe[cpid] = self.exe.get(child.ppid)
                        self._event(child, {P.EVENT_FORK: "fork", P.EVENT_VFORK: "vfork"}.get(ev, "clone"),
                                    None, f"from {tid}")
                    self._resume(t)
                elif ev == P.EVENT_EXEC:
                    former = P.geteventmsg(tid)
                    if former != tid and former in tasks:
                        # a non-leader thread exec'd: it now has the leader's tid; keep its state
                        old = self._forget(former)
                        prev = tasks.get(tid)
                        if prev is not None:
                            self._forget(tid)
                        t = Task(tid, old.ppid)
                        t.started, t.expect, t.in_sys, t.nr, t.args, t.t0 = (
                            True, old.expect, old.in_sys, old.nr, old.args, old.t0)
                        t.restore, t.paths, t.note = old.restore, old.paths, old.note
                        tasks[tid] = t
                    Memory.close(t)  # the old fds point at the dead mm
                    t.tgid = tid
                    stats["execs"] += 1
                    if self.record is not None:
                        with contextlib.suppress(OSError):
                            self.exe[tid] = os.readlink(f"/proc/{tid}/exe")
                        self._event(t, "exec", None, self.exe.get(tid))
                    self._resume(t)
                else:
                    self._resume(t)
            except PtraceError as e:
                if e.errno != _errno.ESRCH:  # ESRCH: killed meanwhile; waitpid will report it
                    raise

    def _detach_all(self) -> None:
        # a tracee already in a stop (its status maybe consumed) detaches at once; the others are
        # interrupted, waited for and detached; they then run on untouched
        for tid in list(self.tasks):
            t = self.tasks[tid]
            if t.restore:
                continue
            try:
                P.detach(tid, 0)
                self._forget(tid)
                continue
            except P.PtraceError:
                pass
            try:
                P.interrupt(tid)
            except P.PtraceError:
                self._forget(tid)
        while self.tasks:
            try:
                tid, st = os.waitpid(-1, P.WALL)
            except ChildProcessError:
                break
            t = self.tasks.get(tid)
            if t is None:
                continue
            if os.WIFEXITED(st) or os.WIFSIGNALED(st):
                self._forget(tid)
                continue
            sig = os.WSTOPSIG(st)
            ev = st >> 16
            if t.restore:  # put back the original pointer before letting go
                try:
                    regs = P.getregs(tid)
                    for reg, val in t.restore:
                        setattr(regs, reg, val)
                    P.setregs(tid, regs)
                except P.PtraceError:
                    pass
            try:
                pass_sig = sig if (ev == 0 and sig not in (P.SYSCALL_TRAP, signal.SIGTRAP)) else 0
                P.detach(tid, pass_sig)
            except P.PtraceError:
                pass
            self._forget(tid)
