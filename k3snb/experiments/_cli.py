"""``k3snb run`` and ``k3snb experiments``: thin adapters over run_experiments() and list_experiments()."""

from __future__ import annotations

import argparse
import json
import sys

from .._cliopts import add_json, add_out, add_param, add_runner, add_runsc, add_timeout


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="execute experiment notebooks into a run folder",
        description="Execute experiment notebooks with papermill (one worker process and fresh kernel per cell) "
                    "into runs/<timestamp>/ and print a summary. A cell is one experiment in one environment; "
                    "--matrix and --repeat make several per experiment. Exit 0 when nothing failed, 1 when "
                    "something failed, 2 for bad usage, 130 when interrupted.",
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="experiment ids or NN prefixes (default: all)")
    add_param(p, help="notebook parameter KEY=VALUE, typed like papermill (True, 3, 2.5, '[\"a\", \"b\"]' lists); "
                      "ID:KEY=VALUE targets one experiment; repeatable")
    add_out(p, "run folder, new or empty; its parent must exist (default runs/<UTC timestamp>)", metavar="DIR")
    add_runner(p, default=None, repeatable=True,
               help="runner spec every selected notebook gets as its `runner` parameter: host, gvisor, "
                    "gvisor:BUILD or gvisor:BUILD:PLATFORM (default: each experiment's first runner)")
    add_runsc(p, help="runsc build for every gvisor cell: 2022, 2024 or a path (default: the system runsc)")
    p.add_argument("--matrix", "-m", action="append", default=[], metavar="AXIS=V1,V2",
                   help="sweep axis: runner, runsc, platform or a notebook parameter, with comma-separated values; "
                        "repeatable (every combination is one cell per experiment)")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="run every cell N times (default 1)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="cells run side by side on this machine (default 1)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="send cells to this Dask distributed scheduler; results come back into the run folder")
    add_timeout(p, help="seconds for each whole notebook, kernel start excluded (default: the registry's)")
    p.add_argument("--registry", metavar="YAML", help="experiment registry (default: the packaged one)")
    p.add_argument("--in-place", action="store_true",
                   help="copy passed notebooks back over their sources (maintainers: make notebooks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json(p, help="print the summary as JSON on stdout instead of the table")
    p.set_defaults(func=_run)

    e = subparsers.add_parser("experiments", help="list the experiment registry, or one experiment's parameters",
                              description="List registered experiments, the seed claims they test and whether "
                                          "their requirements are met here; with IDs, each one's parameters "
                                          "(name, type, default, help) as `-p` accepts them.")
    e.add_argument("ids", nargs="*", metavar="ID", help="show these experiments' parameters (ids or NN prefixes)")
    e.add_argument("--registry", metavar="YAML", help="experiment registry (default: the packaged one)")
    add_json(e)
    e.set_defaults(func=_list)

    w = subparsers.add_parser("worker", help="prepare this machine for sweep cells and serve a Dask scheduler",
                              description="Install the kit's kernelspec, print this machine's readiness (root, "
                                          "runsc builds, k3s) as JSON, then run a Dask worker for `k3snb run "
                                          "--scheduler`. Each cell needs root and runsc on the worker.")
    w.add_argument("scheduler", nargs="?", metavar="tcp://HOST:PORT", help="the Dask scheduler to serve")
    w.add_argument("--nthreads", type=int, default=1, metavar="N",
                   help="cells this worker runs side by side (default 1)")
    w.add_argument("--check", action="store_true", help="only prepare and print readiness; serve nothing")
    add_timeout(w, default=60.0, help="seconds to wait for the scheduler to listen before giving up")
    w.set_defaults(func=_worker)


def parse_matrix(items: list[str]) -> dict[str, list]:
    """``["runsc=2022,2024", "n=1,2"]`` → ``{"runsc": ["2022", "2024"], "n": [1, 2]}``."""
    from ..errors import InvalidParameter
    from ._params import resolve_value

    out: dict[str, list] = {}
    for item in items:
        axis, sep, values = item.partition("=")
        axis = axis.strip()
        if not sep or not axis or not values.strip():
            raise InvalidParameter(f"malformed matrix axis {item!r}: expected AXIS=V1,V2",
                                   hint="write e.g. --matrix runsc=2022,2024 --matrix platform=systrap,ptrace")
        if axis in out:
            raise InvalidParameter(f"matrix axis {axis!r} given twice", hint=f"list all values once: {axis}=A,B")
        raw = [v.strip() for v in values.split(",")]
        out[axis] = raw if axis in ("runner", "runsc", "platform") else [resolve_value(v) for v in raw]
    return out


def _run(args: argparse.Namespace) -> int:
    from ._execute import parse_params, run_experiments
    from ._files import RunStorageError

    params = parse_params(args.param)
    matrix = parse_matrix(args.matrix)
    if args.out is not None:
        from pathlib import Path

        from ..errors import UsageError

        parent = Path(args.out).absolute().parent
        if not parent.is_dir():
            raise UsageError(f"--out {args.out}: folder {parent} does not exist",
                             hint=f"create it first (mkdir -p {parent}) or pass a folder in an existing one")
    try:
        summary = run_experiments(
            args.ids or None, params, out=args.out, runners=args.runners, runsc=args.runsc,
            matrix=matrix, repeat=args.repeat, workers=args.workers, scheduler=args.scheduler,
            timeout=args.timeout, registry=args.registry, in_place=args.in_place,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt as e:
        if getattr(e, "summary", None) is not None:  # the partial summary: cells done, interrupted, not run
            _show(e.summary, args.json)
        print("interrupted: kernels and sandboxes of this run were stopped", file=sys.stderr)
        raise
    except RunStorageError as e:
        summary = getattr(e, "summary", None)
        if summary is not None:
            print(summary.table())
        raise
    _show(summary, args.json)
    return summary.exit_code


def _show(summary, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_dict(), indent=1, default=str), flush=True)
        return
    print(summary.table())
    print(f"results: {summary.run_dir}")
    if summary.report_path.is_file():
        print(f"report: {summary.report_path}")  # the findings page: claims x environments, plots, notebooks
    sys.stdout.flush()


def _worker(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ._dask import worker_main

    if not args.check and not args.scheduler:
        raise UsageError("no scheduler given", hint="pass k3snb worker tcp://HOST:PORT (or --check)")
    if args.nthreads < 1:
        raise UsageError(f"--nthreads must be at least 1, got {args.nthreads}", hint="pass --nthreads 1")
    return worker_main(args.scheduler, args.nthreads, args.check, wait=args.timeout)


def _list(args: argparse.Namespace) -> int:
    from ._registry import load_registry

    reg = load_registry(args.registry)
    if args.ids:
        from ._params import notebook_parameters

        docs = []
        for e in reg.select(args.ids):
            params = notebook_parameters(e.path) if e.path.is_file() else {}
            docs.append({"id": e.id, "notebook": str(e.path), "registry_defaults": e.parameters,
                         "parameters": [p.to_dict() for p in params.values()]})
        if args.json:
            print(json.dumps(docs, indent=1, default=str))
            return 0
        for d in docs:
            print(f"{d['id']} ({d['notebook']})")
            rows = [(p["name"], p["type"], repr(d["registry_defaults"][p["name"]]) + " (registry)"
                     if p["name"] in d["registry_defaults"] else p["default"], p["help"]) for p in d["parameters"]]
            if not rows:
                print("  (no parameters)")
            w = [max([len(r[i]) for r in rows] + [len(h)]) for i, h in enumerate(("name", "type", "default"))]
            if rows:
                print(f"  {'name':{w[0]}}  {'type':{w[1]}}  {'default':{w[2]}}  help")
            for name, typ, default, help_ in rows:
                print(f"  {name:{w[0]}}  {typ:{w[1]}}  {default:{w[2]}}  {help_}".rstrip())
        return 0
    if args.json:
        print(json.dumps(reg.to_frame().to_dict(orient="records"), indent=1))
    else:
        print(reg._repr_text())
    return 0
