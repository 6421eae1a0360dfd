"""``k3snb probe``: probe the host or a gVisor sandbox and print the facts (or the JSON record)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("probe", help="what an environment offers k3s (kernel, /proc/sys, mounts, caps …)")
    p.add_argument("--runner", choices=("host", "gvisor"), default="host", help="where to probe (default host)")
    p.add_argument("--runsc", default=None, metavar="2022|2024|PATH",
                   help="runsc build for --runner gvisor (default: the system runsc)")
    p.add_argument("--cgroupfs", action="store_true", help="gVisor: pass --cgroupfs")
    p.add_argument("--net-raw", action="store_true", help="gVisor: pass --net-raw (CAP_NET_RAW)")
    p.add_argument("--label", default=None, help="name of this environment in tables and diffs")
    p.add_argument("--json", action="store_true", help="print the full JSON record instead of the fact table")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="also write the JSON record to FILE")
    p.set_defaults(func=_probe)


def _probe(args: argparse.Namespace) -> int:
    from ..errors import InvalidParameter
    from ..runners import ignored_by
    from . import probe

    options = {"runsc": args.runsc, "cgroupfs": args.cgroupfs, "net_raw": args.net_raw}
    ignored = ignored_by(args.runner, **options)
    if ignored:  # the API records ignored options; on the command line a flag that does nothing is a mistake
        raise InvalidParameter(f"{', '.join('--' + k.replace('_', '-') for k in ignored)} only apply to a "
                               f"gVisor runner, not --runner {args.runner}",
                               hint="add --runner gvisor, or drop the gVisor options")
    p = probe(args.runner, label=args.label, **{k: v for k, v in options.items() if v})
    if args.output:
        p.to_json(args.output)
    if args.json:
        sys.stdout.write(p.to_json() + "\n")
        return 0
    print(p._repr_text())
    width = max(len(f.fact) for f in p.facts)
    for f in p.facts:
        print(f"{f.fact:<{width}}  {f.value}")
    return 0
