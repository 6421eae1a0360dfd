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
