"""Signals to the tracer: forwarded to every traced process, SIGKILL after a grace period, detach on request."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator

from ._task import Task

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
GRACE = 5.0  # seconds a signalled tree gets to exit before SIGKILL


class StopAttach(Exception):
    """Raised from a signal handler to break an attached tracer out of ``waitpid``."""


class SignalHandling:
    """Engine part: the tracer's handlers for FORWARDED signals and SIGALRM (grace, linger, duration)."""

    tasks: dict[int, Task]
    grace: float | None
    _attached: bool

    @contextlib.contextmanager
    def signals_handled(self, until: float | None = None) -> Iterator[None]:
        """Install the handlers (and the ``until`` deadline, a monotonic time) for the wait loop."""
        old = {s: signal.signal(s, self._on_signal) for s in FORWARDED}
        old_alarm = signal.signal(signal.SIGALRM, self._on_alarm)
        self._stop_attach = False
        self._in_wait = False
        if until is not None:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, until - time.monotonic()))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_alarm)
            for s, h in old.items():
                signal.signal(s, h)

    def kill_all(self) -> None:
        for tid in list(self.tasks):
            with contextlib.suppress(OSError):
                os.kill(tid, signal.SIGKILL)

    def _on_signal(self, signum, frame) -> None:
        if self._attached:
            self._request_stop()
            return
        self._forwarded += 1
        if self._forwarded >= 3 and signum == signal.SIGINT:
            self.kill_all()  # third Ctrl-C: stop asking
            return
        # every traced process, not just the root: `sh -c 'k3s server'` must stop too
        self._sent_sig = signum
        self.signal_tree(signum)
        if self.grace is not None:
            self._arm_kill(self.grace)

    def signal_tree(self, signum: int) -> None:
        """Send ``signum`` once to every traced process (thread groups, not threads)."""
        for pid in {self._tgid(t) for t in list(self.tasks.values())}:
            with contextlib.suppress(OSError):
                os.kill(pid, signum)

    def _late_signal(self, child: Task) -> None:
        # a process forked while the signal was on its way was not in the set signalled above
        if self._sent_sig and self._tgid(child) == child.tid:
            with contextlib.suppress(OSError):
                os.kill(child.tid, self._sent_sig)

    @staticmethod
    def _arm_kill(after: float) -> None:
        # SIGALRM kills the tree; keep whichever deadline (grace, linger) comes first
        left = signal.getitimer(signal.ITIMER_REAL)[0]
        if left == 0 or after < left:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, after))

    def _on_alarm(self, signum, frame) -> None:
        if self._attached:
            self._request_stop()
        else:
            self.kill_all()

    def _request_stop(self) -> None:
        self._stop_attach = True
        if self._in_wait:  # break out of waitpid; outside it the loop checks the flag
            raise StopAttach


def exit_like(status: int | None) -> int:
    """Turn a wait status into our own exit: same code, or re-raise the same signal."""
    if status is None:
        return 1
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    sig = os.WTERMSIG(status)
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), sig)
    return 128 + sig
