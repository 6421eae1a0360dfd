"""``k3snb runtime run [--runner host|gvisor] [--runsc B] [--runtime runc|crun] [--via containerd|direct]
[--snapshotter native|overlayfs] [--trace] [--json] IMAGE -- CMD...``: one container, its stage record."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    from .._cliopts import add_json, add_runner, add_runsc, add_timeout
    from .containerd import RUNTIMES, SNAPSHOTTERS
    from .run import VIAS

    p = subparsers.add_parser(
        "runtime", help="run one container with runc/crun, directly or through containerd, in a runner",
        description="Container runtimes driven by the kit (offline images, supervised containerd).")
    sub = p.add_subparsers(dest="runtime_cmd", metavar="ACTION")
    sub.required = True
    r = sub.add_parser(
        "run", help="run IMAGE's CMD and report the stages reached",
        description="Run one container and print its stdout/stderr; exit with its status. When a stage "
                    "fails: exit 1 with 'error: <stage> failed: <message>' and 'signature: <id>'; past --timeout: "
                    "exit 1 with 'error: <stage it was in> timed out after N s: …'. Everything "
                    "started is removed afterwards, also on Ctrl-C.")
    add_runner(r, default="host", help="where it runs: host or gvisor (or gvisor:BUILD) (default host)")
    add_runsc(r)
    r.add_argument("--runtime", default="runc", metavar="NAME",
                   help=f"OCI runtime: {' or '.join(RUNTIMES)} (default runc)")
    r.add_argument("--via", default="containerd", metavar="HOW",
                   help=f"{' or '.join(VIAS)}: through a kit-supervised containerd, or the runtime on a bundle "
                        "(default containerd)")
    r.add_argument("--snapshotter", default="native", metavar="NAME",
                   help=f"containerd snapshotter: {' or '.join(SNAPSHOTTERS)} (default native)")
    r.add_argument("--trace", action="store_true",
                   help="run the runtime under the kit's tracer and report the syscall behind a failure")
    add_json(r, help="print the stage record as JSON on stdout instead of the container's output")
    add_timeout(r, default=120.0, help="seconds the container may run")
    r.add_argument("image", metavar="IMAGE", help="busybox, pause, or the path of an OCI image archive (.tar)")
    r.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD",
                   help="command to run in the container (default: the image's own)")
    r.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..errors import K3snbError
    from ..runners import check_spec
    from .run import run_container, validate

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    # every input is checked before a sandbox starts: bad input is exit 2 with nothing to clean up
    runner = check_spec(args.runner, runsc=args.runsc)  # built, not started; refuses an ignored --runsc
    validate(args.runtime, args.via, args.snapshotter if args.via == "containerd" else None, args.image)
    with runner:
        a = run_container(runner, args.image, cmd, runtime=args.runtime, via=args.via,
                          snapshotter=args.snapshotter, trace=args.trace, timeout=args.timeout)
    if args.json:
        sys.stdout.write(json.dumps(a.to_dict(), default=str) + "\n")
    else:
        sys.stdout.write(a.stdout)
        sys.stderr.write(a.stderr)
    if a.timed_out:  # not a runtime failure: the stage it was in and the limit it hit
        raise K3snbError(f"{a.failed_stage} {a.error}",
                         hint=f"pass a larger --timeout (was {args.timeout:g} s) or a command that ends")
    if not a.ok:
        print(f"error: {a.failed_stage} failed: {a.error}", file=sys.stderr)
        if a.signature:
            print(f"signature: {a.signature}", file=sys.stderr)
        if a.syscall:
            sc = a.syscall
            print(f"syscall: {sc.get('syscall')}({sc.get('path') or sc.get('args') or ''}{', ' + sc['flags'] if sc.get('flags') else ''})"
                  f" = {sc.get('errno')} in {sc.get('exe')}", file=sys.stderr)
        return 1
    return int(a.returncode or 0) & 0xFF
