"""``k3snb doctor [--clean] [--json]``: installed components and stale leftovers of killed runs."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "doctor", help="show what is installed (runsc builds, runc, containerd, CNI, k3s) and stale leftovers",
        description="Report installed components and records of killed runs; --clean reaps what those "
                    "runs left (tagged processes, runsc sandboxes, mounts, temp dirs) and nothing else.",
    )
    p.add_argument("--clean", action="store_true", help="reap stale records (only what the kit created)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from .reaper import doctor

    d = doctor(clean=args.clean)
    if args.json:
        sys.stdout.write(json.dumps(d.to_dict(), indent=1, default=str) + "\n")
    else:
        print(d._repr_text())
    # after --clean, anything still stale is a failure; a plain report only informs
    return 1 if args.clean and (d.stale or d.stale_cgroups or d.orphans) else 0
