"""No runner-kind branches outside ``k3snb/runners/``: callers ask ``runner.capabilities`` and pass
options through the runner spec (``k3snb.runners.resolve``), never ``if kind == "gvisor"``.

A line that compares a *probe's detected sandbox* (data, not a runner) may say so with a trailing
``# not-a-runner-branch: <reason>``; there may be only a few such lines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAMES = r"""["'](?:gvisor|host)["']"""
PATTERNS = [
    re.compile(rf"\.kind\s*(?:==|!=)\s*{NAMES}"),                    # r.kind == "gvisor"
    re.compile(rf"\bkind\s*(?:==|!=)\s*{NAMES}"),                    # kind == "host"
    re.compile(rf"{NAMES}\s*(?:==|!=)\s*\w"),                        # "gvisor" == runner
    re.compile(rf"\brunner\w*\s*(?:==|!=)\s*{NAMES}"),               # runner == "gvisor"
    re.compile(rf"(?:==|!=)\s*{NAMES}"),                             # anything == "gvisor"
    re.compile(rf"\b(?:kind|runner\w*)\s+(?:not\s+)?in\s+[(\[{{]\s*{NAMES}"),  # runner in ("gvisor", …)
    re.compile(r"""(?:info\(\)|runner\w*)\s*(?:\[["']kind["']\]|\.get\(["']kind["']\))\s*(?:==|!=)"""),
    re.compile(r"isinstance\([^)]*\b(?:GVisor|Host)\b"),             # isinstance(r, GVisor)
]
OPT_OUT = "# not-a-runner-branch:"


def _sources() -> list[tuple[str, int, str]]:
    lines = []
    for f in sorted((REPO / "k3snb").rglob("*.py")):
        rel = f.relative_to(REPO).as_posix()
        if rel.startswith("k3snb/runners/"):
            continue
        lines += [(rel, i, t) for i, t in enumerate(f.read_text().splitlines(), 1)]
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text()).get("cells", [])
        for c, cell in enumerate(cells):
            if cell.get("cell_type") == "code":
                src = "".join(cell.get("source", []))
                lines += [(f"{nb.relative_to(REPO).as_posix()}[cell {c}]", i, t)
                          for i, t in enumerate(src.splitlines(), 1)]
    return lines


def test_patterns_catch_the_branches_they_are_for():
    bad = ['if r.kind == "gvisor":', "if runner == 'gvisor':", 'x = {"net_raw": True} if runner == "gvisor" else {}',
           'if kind != "host":', 'if "gvisor" == name:', 'if runner in ("gvisor", "x"):',
           'if r.info()["kind"] == "host":', 'isinstance(r, GVisor)', 'if runner_info.get("kind") != x:']
    good = ['r = resolve("gvisor:2024")', 'if r.capabilities.own_kernel:', 'runner="gvisor"',
            'probe("host")', 'w.kind == "failure"', 'm["kind"] == "failure"', 'r.get("kind") == "redirect"']
    assert all(any(p.search(s) for p in PATTERNS) for s in bad)
    assert not any(p.search(s) for p in PATTERNS for s in good)


def test_no_runner_kind_branches_outside_runners():
    found, opted = [], []
    for where, line_no, text in _sources():
        if any(p.search(text) for p in PATTERNS):
            (opted if OPT_OUT in text else found).append(f"{where}:{line_no}: {text.strip()}")
    assert not found, ("runner-kind branches outside k3snb/runners/ (ask runner.capabilities, pass options "
                       "through k3snb.runners.resolve):\n" + "\n".join(found))
    assert len(opted) <= 3, "too many opt-outs:\n" + "\n".join(opted)
