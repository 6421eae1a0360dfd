"""The layering documented in docs/DEVELOPING.md matches the imports: a module imports only from its
own layer or below (module-level and lazy function-level imports alike). Known exceptions are
listed with their reason; a new upward import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "k3snb"

# The layer of each top-level part of the package (see docs/DEVELOPING.md).
LAYERS = {
    # 0 foundation: stdlib-level helpers every layer may use
    "errors": 0, "_paths": 0, "_procfs": 0, "_system": 0, "_fsmagic": 0, "_state": 0, "_cliopts": 0, "report._html": 0,
    "__version__": 0,
    # 1 where things run
    "runners": 1,
    # 2 tools used on a runner
    "probing": 2, "tracing": 2, "workarounds": 2, "cni": 2, "signatures": 2,
    # 3 systems built from the tools
    "k3s": 3, "runtime": 3, "images": 3, "pods": 3, "monitoring": 3,
    # 4 experiments and their verdicts (RunSummary, the result of a run, lives with the report code)
    "experiments": 4, "studies": 4, "_capabilities": 4, "report._summary": 4,
    # 5 the top: reports, the flat API, the CLI, doctor
    "report": 5, "cli": 5, "_clidoc": 5, "_doctor": 5, "__main__": 5, "(flat API)": 5,
}
# (importing file, imported part): why it is allowed
EXCEPTIONS = {
    ("k3snb/k3s/_cli.py", "cli"): "`python -m k3snb.k3s._cli` is the CLI's own entry point",
    ("k3snb/report/_summary.py", "report"):
        "RunSummary.write() also renders <run>/report.html (lazy import of the report maker, G)",
}


def _part(module: str) -> str:
    """``k3snb.report._html`` -> ``report._html``; ``k3snb.runners.gvisor`` -> ``runners``."""
    parts = module.split(".")[1:]
    if not parts:
        return "(flat API)"
    if parts[0] == "report" and len(parts) == 1:
        return "report._html"  # the package's eager face is its HTML base (Rich, Table, render, set_options)
    if parts[0] == "report" and parts[1] in ("_html", "_summary"):
        return f"report.{parts[1]}"
    return parts[0]


def _imports(f: Path) -> list[tuple[str, int]]:
    rel = f.relative_to(REPO).with_suffix("")
    pkg = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("k3snb"):
                continue
            if node.module is None or mod == "k3snb":  # from . import x / from k3snb import x
                out += [(f"{mod}.{a.name}" if a.name != "__version__" else "k3snb.__version__", node.lineno)
                        for a in node.names]
            else:
                out.append((mod, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("k3snb")]
    return out


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    parts -= {"__init__", "report"}
    assert parts <= set(LAYERS), f"parts without a layer (add them here and in docs/DEVELOPING.md): {parts - set(LAYERS)}"


def test_imports_go_down_only():
    bad = []
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(REPO).as_posix()
        own = _part(".".join(f.relative_to(REPO).with_suffix("").parts))
        if rel.endswith("report/__init__.py"):
            own = "report"  # importers get only its eager HTML base; its own lazy imports are the top layer
        mine = LAYERS.get(own, LAYERS.get(own.split(".")[0]))
        for mod, line in _imports(f):
            part = _part(mod)
            theirs = LAYERS.get(part, LAYERS.get(part.split(".")[0]))
            if part == own or theirs is None or mine is None or theirs <= mine:
                continue
            if (rel, part) in EXCEPTIONS:
                continue
            bad.append(f"{rel}:{line}: layer {mine} ({own}) imports layer {theirs} ({mod})")
    assert not bad, "upward imports (move the code, or document an exception):\n" + "\n".join(bad)


# Same file name in two packages, tolerated: conventional names only.
SHARED_NAMES = {"__init__.py", "__main__.py", "_cli.py"}


def test_no_two_modules_share_a_name():
    seen: dict[str, list[str]] = {}
    for f in PKG.rglob("*.py"):
        if "__pycache__" not in f.parts:
            seen.setdefault(f.name, []).append(f.relative_to(REPO).as_posix())
    dup = {n: ps for n, ps in seen.items() if len(ps) > 1 and n not in SHARED_NAMES}
    assert not dup, f"modules sharing a name across packages (rename one): {dup}"
