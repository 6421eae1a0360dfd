"""``k3snb report`` and ``k3snb runs``: thin adapters over make_report() and list_runs()."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .._cliopts import add_json, add_out, check_out_parent


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="findings report of one run, or a comparison of several",
        description="Write the findings report of run folders: claims x environments, a section per experiment "
                    "with links to the executed notebooks, environment facts and, for 2+ runs (oldest first), "
                    "what changed. Exit 0 on success, 2 for bad usage.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folder, folder name under $K3SNB_RUNS (default ./runs), or 'latest'")
    add_out(p, "report file: FILE.html (self-contained page) or FILE.md (markdown); default <run>/report.html, "
               "or <last run>/compare.html for several runs")
    add_json(p, help="print the report's data as JSON (with the report's path) instead of the path")
    p.set_defaults(func=_report)

    r = subparsers.add_parser("runs", help="list past runs",
                              description="List the run folders under $K3SNB_RUNS (default ./runs), oldest first: "
                                          "date, git commit, experiment and verdict counts, folder.")
    r.add_argument("dir", nargs="?", metavar="DIR", help="folder holding the runs (default $K3SNB_RUNS or ./runs)")
    add_json(r, help="machine-readable output: one object per run")
    r.set_defaults(func=_runs)


def _report(args: argparse.Namespace) -> int:
    from ._report import make_report

    if args.out:
        check_out_parent(args.out)
    rep = make_report(args.runs)
    out = Path(args.out) if args.out else rep.runs[-1].path / ("report.html" if len(rep.runs) == 1 else "compare.html")
    path = rep.write(out)
    if args.json:
        print(json.dumps({"report": str(path), **rep.to_dict()}, indent=1, default=str))
    else:
        print(f"report: {path}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    from ._runs import list_runs

    runs = list_runs(args.dir)
    if args.json:
        print(json.dumps(runs.rows, indent=1))
    else:
        print(runs.table())
    return 0
