"""`k3snb trace` / `k3snb intercept` as a user drives them: signals reach the whole traced tree,
output files are created exclusively, bad input is one error/fix pair (issue 12)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from helpers import RUNSC, procs_with

CLI = [sys.executable, "-m", "k3snb"]


def _start(action: str, script: str, tmp_path, *extra: str) -> subprocess.Popen:
    opts = ["-o", str(tmp_path / "t.arrow")] if action == "trace" else []
    return subprocess.Popen([*CLI, action, *opts, *extra, "--", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)


def _wait_for(marker: str, limit: float = 15) -> list[int]:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        pids = procs_with(marker, (b"sleep",))
        if pids:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"no process with {marker!r} started")


def _gone(marker: str, limit: float) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if not procs_with(marker):
            return True
        time.sleep(0.05)
    return not procs_with(marker)


@pytest.mark.parametrize("action", ["trace", "intercept"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_reaches_grandchildren_and_the_command_exits_promptly(tmp_path, action, sig):
    marker = f"100.{uuid.uuid4().int % 10**9}"
    # the sleep is a grandchild of the tracer: sh waits for it (`; true` stops sh from exec'ing it)
    p = _start(action, f"sleep {marker}; true", tmp_path)
    try:
        _wait_for(marker)
        t0 = time.monotonic()
        p.send_signal(sig)
        p.wait(10)
        assert time.monotonic() - t0 < 4, "the tracer waited for the tree instead of signalling it"
        assert _gone(marker, 1), "a traced process outlived the tracer"
    finally:
        p.kill()
        p.wait()
        for pid in procs_with(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("action", ["trace", "intercept"])
def test_a_tree_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path, action):
    marker = f"100.{uuid.uuid4().int % 10**9}"
    # sh and its background sleep both ignore SIGTERM: only the SIGKILL after --grace stops them
    p = _start(action, f"trap '' TERM; sleep {marker} & wait", tmp_path, "--grace", "1")
    try:
        _wait_for(marker)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        p.wait(10)
        took = time.monotonic() - t0
        assert 0.9 <= took < 4, took
        assert _gone(marker, 1)
    finally:
        p.kill()
        p.wait()
        for pid in procs_with(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.root
@pytest.mark.runsc
def test_sigterm_with_a_runner_ends_the_traced_tree_and_the_sandbox(tmp_path):
    marker = f"100.{uuid.uuid4().int % 10**9}"
    tag = tmp_path / "k3tmp"  # every runsc process of this run names a path under it
    tag.mkdir()
    p = subprocess.Popen([*CLI, "intercept", "--runner", "gvisor", "--", "sh", "-c", f"sleep {marker}; true"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                         env={**os.environ, "K3SNB_TMP": str(tag)})
    try:
        end = time.monotonic() + 60
        while not procs_with(marker, RUNSC) and time.monotonic() < end:  # the tracer's `runsc exec`
            time.sleep(0.1)
        assert procs_with(marker, RUNSC), "the traced command never started"
        assert procs_with(str(tag))
        time.sleep(1)
        p.send_signal(signal.SIGTERM)
        p.wait(20)
        assert _gone(marker, 5) and _gone(str(tag), 5), "the sandbox or the traced tree outlived the command"
    finally:
        p.kill()
        p.wait()
