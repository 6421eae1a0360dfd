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
        p.wait(30)
        # (the sleep alone would keep it 100 s; the bound leaves room for a loaded machine)
        assert time.monotonic() - t0 < 10, "the tracer waited for the tree instead of signalling it"
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
        p.wait(30)
        took = time.monotonic() - t0
        assert 0.9 <= took < 10, took
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


# -- output files ------------------------------------------------------------------------------------
ARROW_MAGIC = b"ARROW1"


@pytest.mark.parametrize("action", ["trace", "intercept"])
def test_planted_symlinks_in_a_sticky_folder_are_never_followed(tmp_path, action):
    victim = tmp_path / "victim"  # stands for a root-only file such as /etc/shadow
    victim.write_text("secret\n")
    victim.chmod(0o600)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    names = ["trace.arrow.rows", "trace.arrow.part", "trace.arrow", "meta.json"]
    for name in names:
        (shared / name).symlink_to(victim)
    r = subprocess.run([*CLI, action, "--meta", "meta.json", "--", "true"], cwd=shared, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "secret\n"
    assert (shared / "meta.json").is_file() and not (shared / "meta.json").is_symlink()
    if action == "trace":  # the output replaced the planted link; it did not write through it
        assert not (shared / "trace.arrow").is_symlink()
        assert (shared / "trace.arrow").read_bytes()[:6] == ARROW_MAGIC
    assert sorted(p.name for p in shared.iterdir()) == sorted(names)  # no temp files left


def test_a_log_planted_as_a_symlink_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("secret\n")
    (tmp_path / "icept.log").symlink_to(victim)
    r = subprocess.run([*CLI, "intercept", "--log", "icept.log", "--redirect", "/k3snb-a=/k3snb-b", "--", "true"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "symbolic link" in r.stderr, r.stderr
    assert victim.read_text() == "secret\n"


def test_out_in_a_missing_folder_is_refused_and_not_created(tmp_path):
    r = subprocess.run([*CLI, "trace", "-o", str(tmp_path / "missing" / "dir" / "t.arrow"), "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "folder" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / "missing").exists()


# -- bad input ---------------------------------------------------------------------------------------
BAD = [
    (["trace", "-o", "/proc/version", "--", "true"], 2, "--out /proc/version"),
    (["trace", "-o", ".", "--", "true"], 2, "is a directory"),
    (["trace", "--meta", "/proc/k3snb-meta", "--", "true"], 2, "--meta"),
    (["trace", "--attach", "999999999"], 2, "no process with pid"),
    (["trace", "--attach", "0"], 2, "wants a pid"),
    (["trace", "--attach", "1", "--", "true"], 2, "not both"),
    (["trace", "--duration", "1", "--", "true"], 2, "only with --attach"),
    (["trace", "-e", "opnat", "--", "true"], 2, "unknown syscall"),
    (["trace", "-e", "%nope", "--", "true"], 2, "unknown syscall category"),
    (["intercept", "--grace", "-1", "--", "true"], 2, "--grace"),
    (["intercept", "--redirect", "nope", "--", "true"], 2, "SRC=DST"),
    (["intercept", "--redirect", "rel=/x", "--", "true"], 2, "absolute"),
    (["intercept", "--fail", "unshare=ENOPE", "--", "true"], 2, "unknown errno"),
    (["intercept", "--statfs", "9p=zfsx", "--", "true"], 2, "filesystem type"),
    (["intercept", "--rules", "missing.json", "--", "true"], 2, "not found"),
    (["intercept", "--log", "/nonexistent/dir/x.log", "--", "true"], 2, "does not exist"),
    (["intercept"], 2, "no command"),
    (["intercept", "--", "/nonexistent/cmd"], 2, "not executable"),
    (["intercept", "--", "/tmp"], 2, "not executable"),
    (["intercept", "--rules", "/tmp", "--", "true"], 2, "cannot read rules file"),
    (["intercept", "--", "k3snb-no-such-command"], 2, "command not found"),
]


@pytest.mark.parametrize("args,code,text", BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_input_is_one_error_and_fix_pair(tmp_path, args, code, text):
    r = subprocess.run([*CLI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == code, r.stderr
    lines = r.stderr.splitlines()
    assert [ln.split(":")[0].strip() for ln in lines] == ["error", "fix"], r.stderr
    assert text in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing started


def test_attaching_to_an_already_traced_process_is_one_error(tmp_path):
    marker = f"100.{uuid.uuid4().int % 10**9}"
    p = _start("intercept", f"exec sleep {marker}", tmp_path)
    try:
        (pid,) = _wait_for(marker)
        r = subprocess.run([*CLI, "trace", "--attach", str(pid), "--duration", "1"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        lines = r.stderr.splitlines()
        assert len(lines) == 2 and lines[0].startswith("error: cannot attach") and "fix:" in lines[1], r.stderr
        assert "Operation not permitted" in lines[0]
        assert not (tmp_path / "trace.arrow").exists()
    finally:
        p.kill()
        p.wait()
        for pid in procs_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_kill_9_of_trace_leaves_no_file_and_no_process(tmp_path):
    marker = f"100.{uuid.uuid4().int % 10**9}"
    p = _start("trace", f"sleep {marker}; true", tmp_path)
    try:
        _wait_for(marker)
        p.kill()  # SIGKILL: no cleanup code runs; EXITKILL ends the tree, the rows file has no name
        p.wait(10)
        assert _gone(marker, 5)
        assert list(tmp_path.iterdir()) == []
    finally:
        p.kill()
        p.wait()
        for pid in procs_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_kill_9_of_intercept_then_doctor_clean_leaves_no_fake_files(tmp_path):
    marker = f"100.{uuid.uuid4().int % 10**9}"
    env = {**os.environ, "K3SNB_STATE": str(tmp_path / "state"), "K3SNB_TMP": str(tmp_path / "tmp")}
    p = subprocess.Popen([*CLI, "intercept", "--fake", "/proc/sys/kernel/panic=10", "--", "sh", "-c",
                          f"sleep {marker}; true"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        _wait_for(marker)
        assert [d.name[:12] for d in (tmp_path / "tmp").iterdir()] == ["k3snb-fakes-"]
        p.kill()
        p.wait(10)
        assert _gone(marker, 5)
        r = subprocess.run([*CLI, "doctor", "--clean"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert list((tmp_path / "tmp").iterdir()) == [], r.stdout
    finally:
        p.kill()
        p.wait()
        for pid in procs_with(marker):
            os.kill(pid, signal.SIGKILL)
