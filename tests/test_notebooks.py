"""nbval over the stored notebooks: each is re-executed with the kit kernel and compared, after
notebooks/nbval-sanitize.cfg, with the outputs of the real run it was stored with.

Per notebook this runs, in a subprocess (so requirements from the registry become skips here; the k3s
notebooks' stored outputs are their no-k3s run, so they are checked where no k3s binary is found and
skipped where one is, where the ``k3s``-marked tests run instead):

    pytest --nbval notebooks/NN.ipynb --nbval-sanitize-with notebooks/nbval-sanitize.cfg --nbval-kernel-name k3snb
"""

from __future__ import annotations

import functools
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


@functools.cache
def _has_k3s() -> bool:
    from k3snb import _capabilities as cap

    return cap.has_k3s()


def _params():
    reg = {e.notebook: e for e in load_registry().entries}
    out = []
    for nb in sorted(NOTEBOOKS.glob("*.ipynb")):
        e = reg.get(nb.name)
        marks = []
        if e is not None:
            marks = [getattr(pytest.mark, r) for r in e.requires if r != "k3s"]
            if "k3s" in e.requires:  # stored outputs are the no-k3s run (not-testable verdicts, workaround cycles)
                marks.append(pytest.mark.skipif(_has_k3s(), reason="a k3s binary is present: its k3s-marked tests "
                                                "run instead; the stored outputs were recorded without k3s"))
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


# -- what the stored notebooks show (no kernel needed: reads the stored outputs) -------------------
import configparser  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402

VERDICT_LINE = re.compile(r"^VERDICT (.+?) \| (reproduced|refuted|not-testable|inconclusive) \| ")


def _stored():
    reg = {e.notebook: e for e in load_registry().entries}
    return [pytest.param(nb, reg[nb.name], id=nb.stem) for nb in sorted(NOTEBOOKS.glob("*.ipynb")) if nb.name in reg]


def _code_cells(nb: Path) -> list[dict]:
    return [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]


def _text(output: dict) -> str:
    if "text" in output:
        return "".join(output["text"])
    data = output.get("data", {})
    return "".join(data.get("text/plain", "")) + "".join(data.get("text/html", ""))


@pytest.mark.parametrize(("path", "entry"), _stored())
def test_registry_claims_are_judged_and_displayed(path, entry):
    """Registry claims == judged claims == displayed claims: the last cell is the one
    ``studies.conclude(<id>, ...)`` call (it refuses to record verdicts that do not cover exactly the
    registry's claims), and its stored output shows one verdict line per registry claim."""
    cells = _code_cells(path)
    sources = ["".join(c["source"]) for c in cells]
    assert not any("k3snb.verdict(" in s or re.search(r"^\s*(def |class )|lambda\b|open_runner", s, re.M)
                   for s in sources), f"{path.name}: verdicts or helper definitions inline in the notebook"
    last = sources[-1]
    assert last.count("studies.conclude(") == 1 and f'"{entry.id}"' in last, f"{path.name}: last cell must conclude"
    assert sum(s.count("studies.conclude(") for s in sources) == 1, f"{path.name}: one verdict table only"
    text = "".join(o.get("data", {}).get("text/plain", "") if isinstance(o.get("data", {}).get("text/plain"), str)
                   else "".join(o.get("data", {}).get("text/plain", [])) for o in cells[-1]["outputs"])
    shown = [m.group(1) for line in text.splitlines() if (m := VERDICT_LINE.match(line))]
    assert sorted(shown) == sorted(entry.claims), f"{path.name}: displayed {shown}, registry {list(entry.claims)}"
    assert len(shown) == len(set(shown))


def _sanitizers() -> list[tuple[re.Pattern, str]]:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(SANITIZE)
    return [(re.compile(cfg[s]["regex"]), cfg[s]["replace"]) for s in cfg.sections()]


# values that belong to one machine; a fresh clone elsewhere would see others
KERNEL_BUILD = re.compile(r"#\d+ SMP|\b\d+\.\d+\.\d+-\d+-(?:amd64|arm64|generic|cloud-amd64|rt-amd64)\b")
LEFTOVER = [re.compile(p) for p in (r"/tmp/\S", r"\b(?:pid|PID)\s*[=:]?\s*\d{2,}", r"\b\d+\.\d{5,}\b")]


def machine_specific(path: Path) -> list[str]:
    """What in a stored notebook's outputs only this machine (or one run) has: this machine's kernel build or
    hostname, any kernel build string (compared or not); a temp path, pid or long timing left in a compared
    output after nbval-sanitize.cfg."""
    machine = [v for v in (platform.release(), platform.version(), platform.node()) if len(v) > 3]
    rules = _sanitizers()
    found = []
    for i, cell in enumerate(_code_cells(path)):
        compared = "NBVAL_IGNORE_OUTPUT" not in "".join(cell["source"])
        for o in cell.get("outputs", []):
            text = _text(o)
            found += [f"cell {i}: this machine's {v!r}" for v in machine if v in text]
            found += [f"cell {i}: kernel build {m[0]!r}" for m in [KERNEL_BUILD.search(text)] if m]
            if compared:
                for rx, rep in rules:
                    text = rx.sub(rep, text)
                found += [f"cell {i}: unsanitized {m[0]!r}" for rx in LEFTOVER for m in [rx.search(text)] if m]
    return found


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_stored_outputs_carry_no_machine_specific_values(path):
    assert machine_specific(path) == [], path.name


def test_portability_check_catches_what_broke_nbval_elsewhere(tmp_path):
    """A stored probe output with the kernel build string (what notebook 00 once stored) is caught in any cell;
    a bare timing the sanitizer does not cover is caught in a compared cell only."""
    out = {"output_type": "stream", "name": "stdout",
           "text": [f"kernel.version  {platform.version()} #1 SMP PREEMPT_DYNAMIC\n",
                    "/tmp/k3snb-x/y pid=4242 (sanitized), probe took 12.345678\n"]}
    cells = [{"cell_type": "code", "source": src, "metadata": {}, "outputs": [out], "execution_count": 1}
             for src in ("probe()", "# NBVAL_IGNORE_OUTPUT\nprobe()")]
    nb = tmp_path / "leak.ipynb"
    nb.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    found = machine_specific(nb)
    assert any("cell 0: kernel build" in f for f in found) and any("cell 1: kernel build" in f for f in found)
    assert any(f.startswith("cell 0: unsanitized") for f in found)
    assert not any(f.startswith("cell 1: unsanitized") for f in found)


def _verdicts_shown(path: Path) -> dict[str, str]:
    cells = _code_cells(path)
    if not cells:
        return {}
    plain = [o.get("data", {}).get("text/plain", "") for o in cells[-1].get("outputs", [])]
    text = "".join(p if isinstance(p, str) else "".join(p) for p in plain)
    return {m.group(1): m.group(2) for line in text.splitlines() if (m := VERDICT_LINE.match(line))}


def test_readme_findings_table_matches_the_notebooks_row_for_row():
    """Every verdict a stored notebook shows is in the README findings table with the same status, and the
    table claims nothing for those notebooks that they do not show."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## What the suite found"):]
    section = section[:section.index("\n## ", 4)]
    table: dict[tuple[str, str], str] = {}
    for line in section.splitlines():
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) >= 3 and re.fullmatch(r"\d\d", cols[0]):
            for claim in re.findall(r"`([^`]+)`", cols[1]):
                table[(cols[0], claim)] = cols[2]
    shown = {(nb.name[:2], c): s for nb in sorted(NOTEBOOKS.glob("*.ipynb")) for c, s in _verdicts_shown(nb).items()}
    judged_notebooks = {nb for nb, _ in shown}
    assert shown, "no stored verdict tables"
    assert {k: v for k, v in table.items() if k[0] in judged_notebooks} == shown
