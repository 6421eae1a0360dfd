"""The tracer process: parse a command line, run the engine, exit with the command's own status.

This is what ``python -m k3snb.tracing`` runs, inside a runner or on the host; ``k3snb.trace()`` and
``k3snb.intercept()`` start it as a subprocess and read the files it leaves (Arrow rows, a JSON
meta file, a text log).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from ..errors import InvalidParameter, K3snbError
from ._rules import Rule, load_rules, parse_redirect, parse_statfs

EPILOG = """examples:
  python -m k3snb.tracing trace --out t.arrow -- sh -c 'cat /proc/sys/kernel/panic'
  python -m k3snb.tracing intercept --redirect /proc/sys/=/tmp/fake/ --statfs 9p=ext4 -- stat -f /
  python -m k3snb.tracing intercept --rules rules.json --log icept.log -- k3s server ...
The command's exit status (or the signal that killed it) becomes the tracer's own.
SIGTERM/SIGINT/SIGHUP/SIGQUIT are forwarded to every traced process; what is left after --grace
seconds is killed. The tree dies with the tracer."""


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", metavar="FILE", help="rules JSON written by k3snb.tracing.save_rules")
    p.add_argument("--redirect", action="append", default=[], metavar="SRC=DST",
                   help="rewrite path SRC (prefix if it ends with /) to DST; repeatable")
    p.add_argument("--statfs", action="append", default=[], metavar="FROM=TO",
                   help="report f_type TO for FROM (a type like 9p, or a /path); repeatable")
    p.add_argument("--fake", action="append", default=[], metavar="PATH=CONTENT",
                   help="make PATH read as CONTENT; repeatable")
    p.add_argument("--fail", action="append", default=[], metavar="WHAT=ERRNO",
                   help="fail a syscall name or /path with ERRNO (e.g. unshare=EPERM); repeatable")
    p.add_argument("--no-seccomp", action="store_true", help="stop at every syscall (no BPF filter)")
    p.add_argument("--no-follow", action="store_true", help="do not follow children and threads")
    p.add_argument("--linger", type=float, default=None, metavar="S",
                   help="after the command exits, SIGKILL leftover descendants after S seconds")
    p.add_argument("--grace", type=float, default=5.0, metavar="S",
                   help="after SIGTERM/SIGINT/SIGHUP/SIGQUIT (forwarded to every traced process), "
                        "SIGKILL the tree after S seconds (default 5)")
    p.add_argument("--meta", metavar="FILE", help="write a JSON summary (status, stats, features)")
    p.add_argument("--log", metavar="FILE", help="append one line per rewrite to FILE ('-' = stderr)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m k3snb.tracing", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description="Trace or intercept a process tree with ptrace.")
    sub = ap.add_subparsers(dest="action", required=True)
    t = sub.add_parser("trace", help="record syscalls and process events to an Arrow file")
    t.add_argument("--out", metavar="FILE",
                   help="Arrow IPC file for the rows (a name ending in .rows keeps the raw stream: "
                        "no pyarrow import in the tracer; k3snb.trace() converts it)")
    t.add_argument("--syscalls", "-e", metavar="LIST",
                   help="comma list of syscall names or %%categories (default: all)")
    t.add_argument("--attach", type=int, metavar="PID", help="attach to a running process instead")
    t.add_argument("--duration", type=float, metavar="S", help="with --attach: detach after S seconds")
    t.add_argument("--batch", type=int, default=20_000, metavar="N",
                   help="rows held in memory before a batch is written (default 20000)")
    add_common(t)
    i = sub.add_parser("intercept", help="rewrite paths / statfs / errno; no trace rows")
    add_common(i)
    sub.add_parser("probe", help="print what this kernel offers the tracer (JSON)")
    return ap


def collect_rules(ns: argparse.Namespace) -> list[Rule]:
    rules: list[Rule] = []
    if ns.rules:
        rules += load_rules(ns.rules)
    rules += [parse_redirect(s) for s in ns.redirect]
    rules += [parse_statfs(s) for s in ns.statfs]
    for s in ns.fake:
        if "=" not in s:
            raise InvalidParameter(f"--fake wants PATH=CONTENT, got {s!r}", hint="e.g. --fake /proc/sys/kernel/panic=10")
        p, c = s.split("=", 1)
        rules.append(Rule.fake(p, c))
    for s in ns.fail:
        if "=" not in s:
            raise InvalidParameter(f"--fail wants WHAT=ERRNO, got {s!r}", hint="e.g. --fail unshare=EPERM")
        what, err = s.split("=", 1)
        rules.append(Rule.fail(err, path=what) if what.startswith("/") else Rule.fail(err, syscalls=[what]))
    return rules


def materialise(rules: list[Rule], fakedir: Path | None) -> tuple[list[Rule], Path | None]:
    """Turn ``fake`` rules into files plus exact redirects (the dir must be seen by the tracee)."""
    out = []
    for r in rules:
        if r.kind != "fake":
            out.append(r)
            continue
        if fakedir is None:
            from .._state import make_tempdir

            fakedir = make_tempdir("fakes")
        f = fakedir / r.path.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(r.content or "")
        out.append(Rule.redirect(r.path, str(f), prefix=False, note=r.note or "fake"))
    return out, fakedir


def _argv(cmd: list[str]) -> list[str]:
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise InvalidParameter("no command given", hint="put the command after --, e.g. -- ls /")
    exe = cmd[0]
    if "/" not in exe:
        found = shutil.which(exe)
        if not found:
            raise InvalidParameter(f"command not found: {exe!r}", hint="give a full path or fix PATH")
        exe = found
    elif not os.access(exe, os.X_OK):
        raise InvalidParameter(f"not executable: {exe!r}", hint="check the path and its mode")
    return [exe] + cmd[1:]


def run(ns: argparse.Namespace) -> int:
    from ._decode import resolve_syscalls
    from ._engine import Engine, exit_like, probe_features

    if ns.action == "probe":
        print(json.dumps(probe_features().to_dict()))
        return 0
    rules = collect_rules(ns)
    attach = getattr(ns, "attach", None)
    argv = None if attach else _argv(ns.cmd)
    tracing = ns.action == "trace"
    syscalls = resolve_syscalls(ns.syscalls) if tracing else set()
    writer = None
    if tracing:
        from ._store import RowWriter

        out = Path(ns.out or "trace.arrow")
        # the tracer streams raw column batches; an Arrow file is made from them at the end
        rows_path = out if out.suffix == ".rows" else out.with_name(out.name + ".rows")
        writer = RowWriter(rows_path, batch=max(1, getattr(ns, "batch", 20_000)))
    logf = None
    log = None
    if ns.log:
        logf = sys.stderr if ns.log == "-" else open(ns.log, "a", buffering=1)  # noqa: SIM115

        def log(line: str) -> None:
            logf.write(f"k3snb.trace {time.strftime('%H:%M:%S')} {line}\n")
    fakedir = None
    status = None
    t0 = time.monotonic()
    eng = None
    try:
        rules, fakedir = materialise(rules, None)
        eng = Engine(rules, syscalls=syscalls, record=writer, seccomp=False if ns.no_seccomp else None,
                     follow=not ns.no_follow, linger=ns.linger, log=log, grace=ns.grace)
        if attach:
            try:
                eng.attach(attach)
            except (OSError, K3snbError) as e:
                raise InvalidParameter(f"cannot attach to pid {attach}: {e}",
                                       hint="the pid must exist and be traceable (root, or same user)") from e
            status = eng.loop(until=time.monotonic() + ns.duration if ns.duration else None)
        else:
            eng.spawn(argv)
            status = eng.loop()
    finally:
        if writer is not None:
            writer.close()
            if rows_path != out:
                from ._store import convert

                convert(rows_path, out)
                rows_path.unlink()
        if fakedir is not None:
            shutil.rmtree(fakedir, ignore_errors=True)
        if ns.meta:
            meta = {
                "argv": argv, "attach": attach, "action": ns.action,
                "returncode": None if status is None else (
                    os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)),
                "wall_s": time.monotonic() - t0,
                "rows": writer.count if writer is not None else 0,
                "stats": eng.stats if eng else {}, "features": eng.features.to_dict() if eng else {},
                "seccomp": eng.use_seccomp if eng else None, "rules": [r.to_json() for r in rules],
                "tracer_pid": os.getpid(),
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
            Path(ns.meta).write_text(json.dumps(meta))
        if logf is not None and logf is not sys.stderr:
            logf.close()
    if attach:
        return 0
    return exit_like(status)


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    ns = ap.parse_args(argv)
    try:
        return run(ns)
    except K3snbError as e:
        print(f"k3snb.trace: {e}", file=sys.stderr)
        return 125  # like env(1)/podman: the tool failed, the command did not run
