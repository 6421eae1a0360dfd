"""Processes of a run: the tag every one carries, parent-death wiring, and killing what is left."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time

from .. import _state
from .._procfs import descendants, pids_with_env, proc_state

TAG_ENV = _state.RUN_TAG_ENV  # <run_id>/<cell>: every process a cell starts inherits it; doctor finds orphans by it
RUN_DIR_ENV = "K3SNB_RUN_DIR"
_PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int, sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (``PR_SET_PDEATHSIG``).

    Returns False when the parent is already gone (it died before the request; act as if signalled).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    return os.getppid() == expected_parent


def tagged_processes(tag: str) -> list:
    """Live processes whose ``K3SNB_RUN_TAG`` is ``tag`` or starts with ``<tag>/`` (the reaper's env scan)."""
    import psutil

    me = os.getpid()
    found = []
    for pid, v in pids_with_env(TAG_ENV).items():
        if pid != me and (v == tag or v.startswith(tag + "/")):
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(pid))
    return found


def kill_tagged(tag: str, grace: float = 5.0) -> list[int]:
    """SIGTERM every process tagged ``tag``, SIGKILL after ``grace`` s; returns their pids."""
    import psutil

    procs = tagged_processes(tag)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)
    return [p.pid for p in procs]


def kill_tree(pid: int, *, include_self: bool = False, wait: float = 3.0) -> list[int]:
    """SIGKILL ``pid``'s descendants (deepest first), and ``pid`` too when asked; returns what was signalled.

    Waits up to ``wait`` s for them to go, reaping our own children: a zombie kernel would still
    count as the live owner of its runners' records, and the reaper never touches a live owner's.
    """
    pids = descendants(pid)[::-1] + ([pid] if include_self else [])
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while True:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:  # reap our children (the kernel)
                pass
        if not [p for p in pids if proc_state(p) not in (None, "Z", "X")] or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def reap_records(owner_pids: set[int]) -> None:
    """Clean what runners inside a cell tagged but could not clean (their owner died): the reaper's job."""
    stale = [r for r in _state.stale_records() if r.owner_pid in owner_pids]
    if stale:
        from ..runners import reaper

        reaper.clean_records(stale)


def stop_worker(proc: subprocess.Popen, first: int = signal.SIGINT, grace: float = 10.0) -> None:
    """SIGINT the worker (papermill then shuts its kernel down), then SIGTERM, then SIGKILL its group."""
    for sig, wait in ((first, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
