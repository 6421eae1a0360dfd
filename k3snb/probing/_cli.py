"""``k3snb probe``: probe the host or a gVisor sandbox and print the facts (or the JSON record)."""

from __future__ import annotations

import argparse
import sys

from .._cliopts import add_json, add_out, add_runner, add_runsc, add_timeout, check_out_parent, write_out


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "probe", help="what an environment offers k3s (kernel, /proc/sys, mounts, caps …)",
        description="Probe an environment (the host, or a fresh gVisor sandbox) for what k3s needs and print "
                    "one fact per line, or the full JSON record.")
    add_runner(p, help="where to probe: host, gvisor, gvisor:BUILD[:PLATFORM] (default host)")
    add_runsc(p, help="runsc build for a gvisor runner: 2022, 2024 or a path (default: the system runsc)")
    p.add_argument("--cgroupfs", action="store_true", help="gVisor: pass --cgroupfs (cgroup files in the sandbox)")
    p.add_argument("--net-raw", action="store_true", help="gVisor: pass --net-raw (CAP_NET_RAW)")
    p.add_argument("--label", default=None, help="name of this environment in tables and diffs")
    add_json(p, help="print the full JSON record instead of the fact table")
    add_out(p, "also write the JSON record to FILE (its folder must exist)")
    add_timeout(p, default=180.0, help="seconds for the whole collection")
    p.set_defaults(func=_probe)


def _probe(args: argparse.Namespace) -> int:
    from ..runners import check_spec
    from . import probe

    options = {"runsc": args.runsc, "cgroupfs": args.cgroupfs, "net_raw": args.net_raw}
    check_spec(args.runner, **{k: v for k, v in options.items() if v})  # before any sandbox exists
    if args.out:  # before probing: a bad path must not cost a sandbox
        check_out_parent(args.out)
    p = probe(args.runner, label=args.label, timeout=args.timeout,
              **{k: v for k, v in options.items() if v not in (None, False)})
    if args.out:
        write_out(args.out, p.to_json() + "\n")
    if args.json:
        sys.stdout.write(p.to_json() + "\n")
        return 0
    print(p._repr_text())
    width = max(len(f.fact) for f in p.facts)
    for f in p.facts:
        print(f"{f.fact:<{width}}  {f.value}")
    return 0
