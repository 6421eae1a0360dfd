"""The README's CLI reference is generated from the parser and matches what `--help` prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from k3snb import _clidoc

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_section() -> str:
    text = README.read_text()
    assert _clidoc.START in text and _clidoc.END in text, "README lacks the CLI reference markers"
    return _clidoc.START + text.split(_clidoc.START, 1)[1].split(_clidoc.END, 1)[0] + _clidoc.END


def test_readme_reference_is_up_to_date():
    assert readme_section() == _clidoc.markdown(), (
        "the README's CLI reference is stale: run `python -m k3snb._clidoc --write README.md`")


def test_reference_covers_every_command():
    section = readme_section()
    progs = [p.prog for p in _clidoc.parsers()]
    assert len(progs) > 20 and len(set(progs)) == len(progs)
    for prog in progs:
        assert f"### `{prog}`" in section


@pytest.mark.parametrize("argv", [[], ["run"], ["classify"], ["k3s", "start"], ["workarounds", "apply"], ["probe"]],
                         ids=lambda a: " ".join(a) or "top")
def test_reference_blocks_equal_the_real_help(argv):
    r = subprocess.run([sys.executable, "-m", "k3snb", *argv, "--help"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "COLUMNS": _clidoc.WIDTH}, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    prog = " ".join(["k3snb", *argv])
    block = readme_section().split(f"### `{prog}`\n\n```text\n", 1)[1].split("\n```", 1)[0]
    assert block == r.stdout.rstrip("\n")
