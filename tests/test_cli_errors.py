"""`--runsc` faults through the real CLI: a file that is no runsc is named as such (no chmod advice for
/etc/passwd), and a runsc that cannot start a sandbox reports a real reason, not an empty one, and
points at no logs folder that teardown already removed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from k3snb.runners.runsc import find_runsc


def kit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "k3snb", *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def one_error(r: subprocess.CompletedProcess, code: int) -> str:
    lines = r.stderr.splitlines()
    assert r.returncode == code, r.stderr
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("  fix: "), r.stderr
    return r.stderr


@pytest.mark.parametrize("path,says", [
    ("/etc/passwd", "is not a runsc binary (not an executable program)"),
    ("/bin/true", "is not a runsc binary (its --version does not say 'runsc version')"),
    ("/no/such/runsc", "does not exist"),
])
def test_a_file_that_is_no_runsc_is_named_so(path, says):
    err = one_error(kit("probe", "--runner", "gvisor", "--runsc", path), 2)
    assert says in err and "chmod" not in err


@pytest.mark.runsc
def test_a_runsc_without_its_x_bit_gets_the_chmod_hint(tmp_path):
    copy = tmp_path / "runsc"
    shutil.copyfile(find_runsc(), copy)
    copy.chmod(0o644)
    err = one_error(kit("probe", "--runner", "gvisor", "--runsc", str(copy)), 2)
    assert "is not executable" in err and f"chmod +x {copy}" in err


def _wrapper(tmp_path: Path, name: str, quiet: bool) -> Path:
    """A real runsc behind a wrapper that passes an unknown flag (runsc refuses it), maybe hiding stderr."""
    runsc = find_runsc()
    w = tmp_path / name
    w.write_text(f'#!/bin/sh\n[ "$1" = --version ] && exec {runsc} --version\n'
                 f'exec {runsc} --no-such-flag "$@"{" 2>/dev/null" if quiet else ""}\n')
    w.chmod(0o755)
    return w


@pytest.mark.root
@pytest.mark.runsc
@pytest.mark.parametrize("quiet,reason", [
    (False, "flag provided but not defined: -no-such-flag"),
    (True, "`runsc run` exited with status 2 without printing an error"),
])
def test_a_runsc_that_cannot_start_a_sandbox_gives_a_real_reason(tmp_path, quiet, reason):
    w = _wrapper(tmp_path, "runsc-wrapper", quiet)
    err = one_error(kit("probe", "--runner", "gvisor", "--runsc", str(w)), 1)
    assert "could not create the sandbox" in err and reason in err, err
    first = err.splitlines()[0]
    assert not first.rstrip().endswith(":") and "logs=" not in err  # no empty reason, no removed folder


@pytest.mark.root
@pytest.mark.runsc
def test_k3s_start_passes_runsc_to_the_runner_and_reports_one_error_pair(tmp_path):
    """`k3s start --runsc` reaches the sandbox: a runsc that cannot start one fails the start with its
    own reason, as one error/fix pair, and leaves no daemon, state record or temp file behind."""
    import os

    from helpers import procs_with

    env = dict(os.environ)
    for var in ("K3SNB_STATE", "K3SNB_TMP", "K3SNB_CACHE"):
        (tmp_path / var).mkdir()
        env[var] = str(tmp_path / var)
    k3s = tmp_path / "k3s"  # answers --version only: the start fails at the sandbox, before k3s runs
    k3s.write_text('#!/bin/sh\necho "k3s version v1.33.5+k3s1 (8a8e43b3)"\necho "go version go1.24.6"\n')
    k3s.chmod(0o755)
    env["K3SNB_K3S"] = str(k3s)
    w = _wrapper(tmp_path, "runsc-quiet", quiet=True)
    r = subprocess.run([sys.executable, "-m", "k3snb", "k3s", "start", "--runner", "gvisor", "--runsc", str(w),
                        "--timeout", "30"], capture_output=True, text=True, timeout=300, env=env,
                       stdin=subprocess.DEVNULL)
    err = one_error(r, 1)
    assert "k3s start failed" in err and "without printing an error" in err and str(w) in err
    assert not list((tmp_path / "K3SNB_STATE").rglob("*.json"))  # no record left
    assert not list((tmp_path / "K3SNB_TMP").iterdir())  # no spec, log or sandbox folder left
    assert not procs_with(str(tmp_path))  # no daemon, no runsc of this test
