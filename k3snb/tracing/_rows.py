"""Trace rows: one tuple per finished syscall or process event, in :data:`ROW_FIELDS` order."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _decode as D
from ._store import FIELDS as ROW_FIELDS
from ._task import Task

if TYPE_CHECKING:
    from ._memory import Memory

__all__ = ["ROW_FIELDS", "Recorder"]

PATH_ARGS = D.PATH_ARGS
SYSCALL_NAMES = D.SYSCALL_NAMES
ERRNO_NAMES = D.ERRNO_NAMES
OPEN_FLAG_ARG = D.OPEN_FLAG_ARG
FD_NRS = D.FD_FIRST_NRS | {n for n, spec in D.PATH_ARGS.items() if spec[0][1] is not None}
# rt_sigreturn "returns" the interrupted call's rax: never an errno
_RT_SIGRETURN = D.SYSCALL_NUMBERS["rt_sigreturn"]


class Recorder:
    """Engine part: rows for the ``record`` callable (syscalls at their exit, events as they happen)."""

    record: Callable[[tuple], None] | None
    mem: Memory
    exe: dict[int, str | None]
    stats: dict[str, int]
    t_start: float

    @staticmethod
    def _comm(tid: int) -> str:
        try:
            with open(f"/proc/{tid}/comm", "rb") as f:
                return f.read().strip().decode(errors="replace")
        except OSError:
            return "?"

    def _tgid(self, t: Task) -> int:
        if not t.tgid:
            try:
                with open(f"/proc/{t.tid}/status", "rb") as f:
                    for line in f:
                        if line.startswith(b"Tgid:"):
                            t.tgid = int(line.split()[1])
                            break
            except (OSError, ValueError):
                pass
            if not t.tgid:
                t.tgid = t.tid
        return t.tgid

    def _record_syscall(self, t: Task, ret: int | None, detail: str | None) -> None:
        nr = t.nr
        a = t.args or (0, 0, 0, 0, 0, 0)
        paths = t.paths
        spec = PATH_ARGS.get(nr)
        if spec is not None and paths is None:
            paths = [self.mem.read_str(t, a[ai]) for ai, _ in spec]
        p1 = p2 = None
        if paths:
            if paths[0] is not None:
                p1 = paths[0].decode("utf-8", "backslashreplace")
            if len(paths) > 1 and paths[1] is not None:
                p2 = paths[1].decode("utf-8", "backslashreplace")
        pid = t.tgid or self._tgid(t)
        self.stats["syscalls"] += 1
        self.record((t.t0 - self.t_start, pid, t.tid, t.ppid, self.exe.get(pid), "syscall",
                     SYSCALL_NAMES.get(nr) or D.name(nr),
                     ", ".join([str(v) if v < 4096 else hex(v) for v in a]), p1, p2,
                     D.fd_arg(nr, a) if nr in FD_NRS else None,
                     D.open_flags(a[OPEN_FLAG_ARG[nr]]) if nr in OPEN_FLAG_ARG else None,
                     ret, ERRNO_NAMES.get(-ret) if ret is not None and -4096 < ret < 0 and nr != _RT_SIGRETURN
                     else None, time.monotonic() - t.t0, detail))

    def _event(self, t: Task, kind: str, ret: int | None = None, detail: str | None = None) -> None:
        if self.record is None:
            return
        pid = self._tgid(t)
        self.record((time.monotonic() - self.t_start, pid, t.tid, t.ppid, self.exe.get(pid), kind, None,
                     None, None, None, None, None, ret, None, None, detail))
