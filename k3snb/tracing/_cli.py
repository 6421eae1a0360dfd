"""``k3snb trace`` and ``k3snb intercept``: the tracer's options plus ``--runner``.

Without ``--runner`` the tracer runs in this process (stdio passes straight through, exit status
is the command's). With a runner the tracer runs inside it and its output is relayed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from .._cliopts import add_out, add_runner, check_out_parent
from ._tracer import add_common

_RUNNER_HELP = "where it runs: host, gvisor, or gvisor:BUILD (default: this machine, no namespaces)"


def register(subparsers) -> None:
    t = subparsers.add_parser("trace", help="trace a command's syscalls and process tree (ptrace)",
                              description="Record syscalls and process events of CMD and its descendants "
                                          "to an Arrow file; prints the failing syscalls.")
    add_runner(t, default=None, help=_RUNNER_HELP)
    add_out(t, "Arrow IPC file for the rows; its folder must exist", default="trace.arrow")
    t.add_argument("--syscalls", "-e", metavar="LIST", help="syscall names or %%categories (default: all)")
    t.add_argument("--attach", type=int, metavar="PID", help="attach to a running process instead")
    t.add_argument("--duration", type=float, metavar="S", help="with --attach: detach after S seconds")
    add_common(t)
    t.set_defaults(func=_trace)
    i = subparsers.add_parser("intercept", help="run a command with paths redirected / statfs spoofed (ptrace)",
                              description="Run CMD with path redirection, fake files, statfs f_type "
                                          "spoofing and forced errnos; exits with CMD's own status.")
    add_runner(i, default=None, help=_RUNNER_HELP)
    add_common(i)
    i.set_defaults(func=_intercept)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP end a runner-side run like Ctrl-C: the runner ends the traced tree and closes.

    (Without a runner the engine itself forwards them to every traced process.)
    """
    def stop(signum, frame):
        raise KeyboardInterrupt

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _exit_code(rc: int | None) -> int:
    if rc is None:
        return 124  # timed out / no status
    return 128 - rc if rc < 0 else rc


def _local(action: str, ns: argparse.Namespace) -> int:
    from ._tracer import run

    ns.action = action
    return run(ns)


def _check_outputs(ns: argparse.Namespace) -> None:
    # refuse unwritable output paths before a sandbox starts (and never mkdir their folders)
    for path, option in ((getattr(ns, "out", None), "--out"), (ns.meta, "--meta"),
                         (ns.log if ns.log != "-" else None, "--log")):
        if path:
            check_out_parent(path, option=option)


def _trace(ns: argparse.Namespace) -> int:
    if ns.runner is None:
        return _local("trace", ns)
    from . import trace
    from ._store import create_new
    from ._tracer import collect_rules, new_output, write_new

    _check_outputs(ns)
    out = Path(ns.out)
    fd, tmp = new_output(out, "--out", lambda: create_new(out))  # claimed before the run starts
    os.close(fd)

    try:
        with _stop_on_signals():
            res = trace(ns.cmd[1:] if ns.cmd[:1] == ["--"] else ns.cmd, runner=ns.runner, syscalls=ns.syscalls,
                        follow=not ns.no_follow, rules=collect_rules(ns), seccomp=False if ns.no_seccomp else None,
                        pid=ns.attach, duration=ns.duration)
        if res.path.exists():
            shutil.copyfile(res.path, tmp)  # our fresh file: no symlink to follow
            os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    print(f"k3snb trace: {res.meta.get('rows', 0)} rows -> {ns.out}", file=sys.stderr)
    fails = res.failures().head(15)
    if len(fails):
        print(fails.to_string(index=False), file=sys.stderr)
    if ns.meta:
        import json

        write_new(Path(ns.meta), json.dumps(res.meta))
    res.close()  # the runner-side copy is published at --out: drop the temp one now, not at exit
    return _exit_code(res.returncode)


def _intercept(ns: argparse.Namespace) -> int:
    if ns.runner is None:
        return _local("intercept", ns)
    from . import intercept
    from ._tracer import collect_rules, new_output, open_append

    _check_outputs(ns)

    with _stop_on_signals():
        res = intercept(ns.cmd[1:] if ns.cmd[:1] == ["--"] else ns.cmd, collect_rules(ns), runner=ns.runner,
                        seccomp=False if ns.no_seccomp else None, linger=ns.linger)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    if ns.log:
        out = sys.stderr if ns.log == "-" else new_output(Path(ns.log), "--log", lambda: open_append(ns.log))
        out.write("".join(line + "\n" for line in res.log))
        if out is not sys.stderr:
            out.close()
    return _exit_code(res.returncode)
