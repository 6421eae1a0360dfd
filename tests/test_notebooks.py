"""nbval over the stored notebooks: each is re-executed with the kit kernel and compared, after
notebooks/nbval-sanitize.cfg, with the outputs of the real run it was stored with.

Per notebook this runs, in a subprocess (so requirements from the registry become skips here):

    pytest --nbval notebooks/NN.ipynb --nbval-sanitize-with notebooks/nbval-sanitize.cfg --nbval-kernel-name k3snb
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from k3snb.experiments import KERNEL_NAME, _execute
from k3snb.experiments._registry import load_registry

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SANITIZE = NOTEBOOKS / "nbval-sanitize.cfg"
FIXTURES = ROOT / "tests" / "notebooks"


def nbval(path: Path, *extra: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    _execute.ensure_kernel()
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--nbval", str(path),
         "--nbval-kernel-name", KERNEL_NAME, "--nbval-kernel-startup-timeout", "180", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout + 300, stdin=subprocess.DEVNULL,
    )


def _params():
    reg = {e.notebook: e for e in load_registry()}
    out = []
    for nb in sorted(NOTEBOOKS.glob("*.ipynb")):
        e = reg.get(nb.name)
        marks = []
        if e is not None:
            marks = [getattr(pytest.mark, r) for r in e.requires]
            marks += [pytest.mark.skipif(shutil.which(p) is None, reason=f"needs {p} on PATH") for p in e.programs]
            if e.slow:
                marks.append(pytest.mark.slow)
        out.append(pytest.param(nb, e.timeout if e else 600, marks=marks, id=nb.stem))
    return out


@pytest.mark.parametrize(("path", "timeout"), _params())
def test_stored_outputs_reproduce(path, timeout):
    r = nbval(path, "--nbval-sanitize-with", str(SANITIZE), "--nbval-cell-timeout", str(int(timeout)),
              timeout=timeout)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


def test_sanitizer_makes_variable_output_comparable():
    """pids, times, /tmp paths, addresses and the HTML section ids differ on every run."""
    fixture = FIXTURES / "sanitize.ipynb"
    strict = nbval(fixture)
    assert strict.returncode == 1 and "mismatch" in strict.stdout  # the comparison really bites
    sanitized = nbval(fixture, "--nbval-sanitize-with", str(SANITIZE))
    assert sanitized.returncode == 0, sanitized.stdout[-4000:]
