"""The tracer process: parse a command line, run the engine, exit with the command's own status.

This is what ``python -m k3snb.tracing`` runs, inside a runner or on the host; ``k3snb.trace()`` and
``k3snb.intercept()`` start it as a subprocess and read the files it leaves (Arrow rows, a JSON
meta file, a text log).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from .._cliopts import check_out_parent
from ..errors import InvalidParameter, K3snbError
from ._rules import Rule, load_rules, parse_redirect, parse_statfs

EPILOG = """examples:
  python -m k3snb.tracing trace --out t.arrow -- sh -c 'cat /proc/sys/kernel/panic'
  python -m k3snb.tracing intercept --redirect /proc/sys=/tmp/fake --statfs 9p=ext4 -- stat -f /
  python -m k3snb.tracing intercept --rules rules.json --log icept.log -- k3s server ...
The command's exit status (or the signal that killed it) becomes the tracer's own.
SIGTERM/SIGINT/SIGHUP/SIGQUIT are forwarded to every traced process; what is left after --grace
seconds is killed (a terminal's Ctrl-C also reaches the foreground processes directly, so they
may see SIGINT twice). The tree dies with the tracer, even on SIGKILL."""


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", metavar="FILE", help="rules JSON written by k3snb.tracing.save_rules")
    p.add_argument("--redirect", action="append", default=[], metavar="SRC=DST",
                   help="rewrite path SRC to DST like a bind mount: a directory's whole subtree, "
                        "a file just itself; repeatable")
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
                        "SIGKILL the tree after S seconds (default 5; with --runner the run ends at once)")
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
    elif not os.path.isfile(exe) or not os.access(exe, os.X_OK):
        raise InvalidParameter(f"not executable: {exe!r}", hint="check the path and its mode")
    return [exe] + cmd[1:]


def _check_options(ns: argparse.Namespace, attach: int | None) -> None:
    cmd = ns.cmd[1:] if ns.cmd[:1] == ["--"] else ns.cmd
    if attach is not None and cmd:
        raise InvalidParameter("pass either --attach PID or a command, not both",
                               hint="drop the command to attach, or drop --attach to start it")
    if attach is not None and attach <= 0:
        raise InvalidParameter(f"--attach wants a pid, got {attach}", hint="pass a positive process id")
    if getattr(ns, "duration", None) is not None and attach is None:
        raise InvalidParameter("--duration works only with --attach",
                               hint="use --attach PID --duration S, or let the command run to its end")
    for option in ("duration", "grace", "linger"):
        v = getattr(ns, option, None)
        if v is not None and not v >= 0:  # also NaN
            raise InvalidParameter(f"--{option} wants seconds >= 0, got {v}", hint=f"e.g. --{option} 5")


def new_output(path: Path, option: str, make):
    # a path the user named that cannot be written is bad input: one error, nothing started
    try:
        return make()
    except OSError as e:
        why = "a symbolic link (never followed)" if e.errno == errno.ELOOP else e.strerror or str(e)
        raise InvalidParameter(f"{option} {path}: cannot write there: {why}",
                               hint=f"pass {option} a file in a folder you can write") from None


def _row_writer(out: Path, batch: int):
    from ._store import RowWriter

    # a name ending in .rows keeps the raw stream (published at once); else a hidden temp file
    return RowWriter(out, batch=batch, publish=out.suffix == ".rows")


def open_append(path: str):
    # append to an existing log, but never through a symlink planted at its name
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    return open(fd, "a", buffering=1)  # noqa: SIM115 - closed by run()


def write_new(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a fresh temp file renamed into place (no symlink followed)."""
    from ._store import create_new

    _publish(create_new(path), path, text)


def _publish(claim: tuple[int, Path], path: Path, text: str) -> None:
    fd, tmp = claim
    try:
        with open(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _record_tmp(path: Path):
    from .._state import Record

    try:
        return Record(kind="tmp", id=path.name, paths=[str(path)]).save()
    except OSError:  # a read-only state folder (inside some runners): the dir still goes in finally
        return None


def _remove_tmp(path: Path, record) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if record is not None:
        record.drop()


def run(ns: argparse.Namespace) -> int:
    from ._decode import resolve_syscalls
    from ._engine import Engine, exit_like, probe_features
    from ._store import create_new

    if ns.action == "probe":
        print(json.dumps(probe_features().to_dict()))
        return 0
    rules = collect_rules(ns)
    attach = getattr(ns, "attach", None)
    _check_options(ns, attach)
    argv = None if attach else _argv(ns.cmd)
    tracing = ns.action == "trace"
    syscalls = resolve_syscalls(ns.syscalls) if tracing else set()
    out = Path(ns.out or "trace.arrow") if tracing else None
    for path, option in ((out, "--out"), (ns.meta, "--meta"), (ns.log if ns.log != "-" else None, "--log")):
        if path:
            check_out_parent(path, option=option)  # before anything starts; never mkdir
    t0 = time.monotonic()
    with contextlib.ExitStack() as undo:  # what to close or remove if the run never starts
        meta_claim = None
        if ns.meta:
            meta_claim = new_output(Path(ns.meta), "--meta", lambda: create_new(ns.meta))
            undo.callback(meta_claim[1].unlink, missing_ok=True)
            undo.callback(os.close, meta_claim[0])
        logf = log = None
        if ns.log:
            logf = sys.stderr if ns.log == "-" else new_output(Path(ns.log), "--log", lambda: open_append(ns.log))
            if logf is not sys.stderr:
                undo.callback(logf.close)

            def log(line: str) -> None:
                logf.write(f"k3snb.trace {time.strftime('%H:%M:%S')} {line}\n")
        writer = None
        if tracing:
            # the tracer streams raw column batches; an Arrow file is made from them at the end
            writer = new_output(out, "--out", lambda: _row_writer(out, max(1, getattr(ns, "batch", 20_000))))
            if not writer.published:
                undo.callback(writer.discard)
            else:
                undo.callback(writer.path.unlink, missing_ok=True)
            undo.callback(writer.close)
        rules, fakedir = materialise(rules, None)
        if fakedir is not None:
            fake_record = _record_tmp(fakedir)  # after kill -9, `k3snb doctor --clean` removes it
            undo.callback(_remove_tmp, fakedir, fake_record)
        eng = Engine(rules, syscalls=syscalls, record=writer, seccomp=False if ns.no_seccomp else None,
                     follow=not ns.no_follow, linger=ns.linger, log=log, grace=ns.grace)
        if attach:
            eng.attach(attach)
        else:
            eng.spawn(argv)
        undo.pop_all()  # started: from here the finally below finishes the outputs
    status = None
    try:
        status = eng.loop(until=time.monotonic() + ns.duration if attach and ns.duration else None)
    finally:
        if fakedir is not None:
            _remove_tmp(fakedir, fake_record)
        try:
            if writer is not None:
                writer.close()
                if not writer.published:
                    from ._store import convert

                    try:
                        convert(writer.path, out)
                    finally:
                        writer.discard()
        finally:
            if meta_claim is not None:
                meta = {
                    "argv": argv, "attach": attach, "action": ns.action,
                    "returncode": None if status is None else (
                        os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)),
                    "wall_s": time.monotonic() - t0,
                    "rows": writer.count if writer is not None else 0,
                    "stats": eng.stats, "features": eng.features.to_dict(),
                    "seccomp": eng.use_seccomp, "rules": [r.to_json() for r in rules],
                    "tracer_pid": os.getpid(),
                    "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                }
                _publish(meta_claim, Path(ns.meta), json.dumps(meta))
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
