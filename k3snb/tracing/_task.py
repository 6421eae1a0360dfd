"""Per-thread tracer state: one :class:`Task` per traced tid (stop expectations, pending rewrite, memory fds)."""

from __future__ import annotations

# what the next syscall-stop of a task (in seccomp mode) is expected to be
EXPECT_NONE, EXPECT_ENTER, EXPECT_EXIT = 0, 1, 2


class Task:
    """One traced thread. Plain slots: the wait loop touches these on every stop."""

    __slots__ = ("tid", "started", "expect", "in_sys", "nr", "args", "t0", "restore", "post_statfs",
                 "force_errno", "paths", "note", "memfd", "wmemfd", "ppid", "tgid")

    def __init__(self, tid: int, ppid: int = 0) -> None:
        self.tid = tid
        self.started = False  # its first (SIGSTOP / PTRACE_EVENT_STOP) stop was seen
        self.expect = EXPECT_NONE
        self.in_sys = False  # all-stops mode: between entry and exit stop
        self.nr = -1
        self.args = None  # the six argument registers as the program passed them
        self.t0 = 0.0
        self.restore = None  # [(register, original value)] to put back at the exit stop
        self.post_statfs = None  # f_type to report at the exit stop
        self.force_errno = 0
        self.paths = None  # path arguments read at entry
        self.note = None  # what was rewritten (the row's detail)
        self.memfd = -1  # /proc/TID/mem, read-only
        self.wmemfd = -1  # /proc/TID/mem, read-write (where the kernel allows it)
        self.ppid = ppid
        self.tgid = 0
