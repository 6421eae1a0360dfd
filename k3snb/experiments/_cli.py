"""``k3snb run`` and ``k3snb experiments``: thin adapters over run_experiments() and list_experiments()."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="execute experiment notebooks into a run folder",
        description="Execute experiment notebooks with papermill (one fresh kernel each) into runs/<timestamp>/ "
                    "and print a summary. Exit 0 when nothing failed, 1 when something failed, 2 for bad usage.",
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="experiment ids or NN prefixes (default: all)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="notebook parameter (typed like papermill); ID:KEY=VALUE targets one experiment")
    p.add_argument("--out", metavar="DIR", help="run folder (new or empty; default runs/<UTC timestamp>)")
    p.add_argument("--runner", action="append", dest="runners", metavar="KIND",
                   help="run with this runner kind (host, gvisor); repeatable; default: each experiment's first")
    p.add_argument("--runsc", metavar="BUILD", help="runsc build: 2022, 2024 or a path")
    p.add_argument("--timeout", type=float, metavar="S", help="seconds per experiment (default: registry)")
    p.add_argument("--registry", metavar="YAML", help="experiment registry (default: the packaged one)")
    p.add_argument("--in-place", action="store_true",
                   help="copy passed notebooks back over their sources (maintainers: make notebooks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)

    e = subparsers.add_parser("experiments", help="list the experiment registry",
                              description="List registered experiments, the seed claims they test and "
                                          "whether their requirements are met here.")
    e.add_argument("--registry", metavar="YAML", help="experiment registry (default: the packaged one)")
    e.add_argument("--json", action="store_true", help="machine-readable output")
    e.set_defaults(func=_list)


def _run(args: argparse.Namespace) -> int:
    from ._execute import parse_params, run_experiments

    params = parse_params(args.param)
    try:
        summary = run_experiments(
            args.ids or None, params, out=args.out, runners=args.runners, runsc=args.runsc,
            timeout=args.timeout, registry=args.registry, in_place=args.in_place,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print("interrupted: kernels and sandboxes of this run were stopped", file=sys.stderr)
        raise
    print(summary.table())
    print(f"results: {summary.run_dir}")
    return summary.exit_code


def _list(args: argparse.Namespace) -> int:
    from ._registry import load_registry

    reg = load_registry(args.registry)
    if args.json:
        print(json.dumps(reg.to_frame().to_dict(orient="records"), indent=1))
    else:
        print(reg._repr_text())
    return 0
