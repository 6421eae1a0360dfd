"""``k3snb k3s start|status|stop|logs|install|profiles`` (also ``python -m k3snb.k3s._cli``).

``start`` validates everything and finds the binary in this process (so a missing k3s exits
non-zero and leaves nothing behind), then hands the cluster to a daemon process
(:mod:`k3snb.k3s._daemon`) that later invocations find through its tagged state record.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .._cliopts import add_json, add_profile, add_runner, add_runsc, add_timeout, printable_lines
from .._paths import kit_python, tmp_root
from .._state import Record, new_id, records
from ..errors import K3sError, UsageError


def register(subparsers) -> None:
    p = subparsers.add_parser("k3s", help="launch and manage k3s with a profile",
                              description="Start k3s server in the background with a launch profile, then "
                                          "inspect, follow and stop it.")
    sub = p.add_subparsers(dest="k3s_cmd", required=True, metavar="ACTION")
    s = sub.add_parser("start", help="start k3s server (in the background) with a profile",
                       description="Validate the profile and flags, find the k3s binary, then start k3s "
                                   "server in a background daemon and wait for the profile's readiness target.")
    add_profile(s, default="control-plane", help="launch profile (see `k3snb k3s profiles`)")
    add_runner(s, help="where k3s runs: host, gvisor, gvisor:BUILD[:PLATFORM] (default host)")
    add_runsc(s)
    s.add_argument("--data-dir", default=None, metavar="DIR",
                   help="k3s --data-dir as seen inside the runner (default: a fresh folder per cluster)")
    s.add_argument("--flag", action="append", default=[], metavar="--K3S-FLAG", dest="flags",
                   help="extra k3s server flag (repeatable), e.g. --flag=--disable-agent")
    add_timeout(s, default=180.0, help="seconds to wait for the profile's readiness target")
    s.add_argument("--host", action="store_true", help="allow an agent to change the host's network tables")
    s.add_argument("--no-strict-flags", action="store_true",
                   help="accept k3s flags the kit does not know (default: refuse them)")
    s.set_defaults(func=_start)
    for name, fn, helptext in (("status", _status, "show running clusters"), ("stop", _stop, "stop clusters")):
        q = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        q.add_argument("id", nargs="?", help="cluster daemon id or its suffix (default: all)")
        add_json(q)
        q.set_defaults(func=fn)
    lg = sub.add_parser("logs", help="print the k3s log", description="Print (and follow) one cluster's k3s log.")
    lg.add_argument("id", nargs="?", help="cluster daemon id or its suffix (default: the only one running)")
    lg.add_argument("--tail", "-n", type=_count, default=50, metavar="N", help="last N lines, 0 for all (default 50)")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the cluster stops")
    lg.set_defaults(func=_logs)
    i = sub.add_parser("install", help="download a k3s release into the kit cache (sha256-checked)",
                       description="Download a k3s release binary into the kit cache and check its sha256.")
    i.add_argument("version", help="k3s release, e.g. v1.33.5+k3s1")
    add_timeout(i, default=60.0, help="seconds for the download")
    i.set_defaults(func=_install)
    pr = sub.add_parser("profiles", help="list launch profiles", description="List the launch profiles.")
    add_json(pr, help="one JSON object per profile")
    pr.set_defaults(func=_profiles)


def _count(text: str) -> int:
    """argparse type: a whole number >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def _daemons() -> list[Record]:
    return [r for r in records() if r.kind == "k3sd" and r.owner_alive()]


def _state(rec: Record) -> dict:
    try:
        return json.loads(rec.note or "{}")
    except ValueError:
        return {}


def _reload(rec: Record) -> Record | None:
    for r in records():
        if r.kind == rec.kind and r.id == rec.id:
            return r
    return None


def _select(ident: str | None) -> list[Record]:
    ds = _daemons()
    if ident:
        ds = [d for d in ds if d.id == ident or d.id.endswith(ident)]
        if not ds:
            raise UsageError(f"no running k3s daemon {ident!r}", hint="see `k3snb k3s status`")
    return ds


def _start(a: argparse.Namespace) -> int:
    # validate here, before any process, record or directory exists
    from ..runners import check_spec
    from .binary import find_k3s
    from .profiles import get_profile, validate_flags

    get_profile(a.profile)
    validate_flags(a.flags, strict=not a.no_strict_flags)
    check_spec(a.runner, runsc=a.runsc)  # a bad spec, ignored --runsc or runsc build fails before any process
    k3s = find_k3s()
    _ = k3s.version
    did = new_id("k3sd-")
    log = tmp_root() / f"k3snb-{did}.log"
    spec = {"id": did, "profile": a.profile, "runner": a.runner, "runsc": a.runsc, "data_dir": a.data_dir,
            "flags": a.flags,
            "timeout": a.timeout, "host": a.host, "strict_flags": not a.no_strict_flags, "daemon_log": str(log)}
    spec_path = tmp_root() / f"k3snb-{did}.spec.json"
    spec_path.write_text(json.dumps(spec))
    with open(log, "ab") as out:
        proc = subprocess.Popen([kit_python(), "-m", "k3snb.k3s._daemon", str(spec_path)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + a.timeout + 120
    state: dict = {}
    while time.monotonic() < deadline:
        rec = next((r for r in records() if r.kind == "k3sd" and r.id == did), None)
        state = _state(rec) if rec else {}
        if state.get("state") in ("running", "failed", "exited"):
            break
        if proc.poll() is not None:
            state = {"state": "failed", "error": f"daemon exited {proc.returncode}: " + _tail(log)}
            break
        time.sleep(0.5)
    else:
        state = {"state": "failed", "error": "timed out waiting for the daemon"}
    if state.get("state") == "running":
        c = state.get("cluster", {})
        ok = state.get("readiness", {}).get("summary", {}).get("ok")
        print(f"k3s started: daemon {did} profile {a.profile} runner {a.runner} reached={c.get('reached')}"
              + ("" if ok else f" (target {c.get('target')} NOT reached; still running — inspect with "
                 f"`k3snb k3s logs`, end with `k3snb k3s stop {did}`)"))
        print(f"  kubeconfig {c.get('kubeconfig')}\n  log {c.get('log')}")
        return 0 if ok else 1
    if state.get("log_tail"):
        print(printable_lines(state["log_tail"]), file=sys.stderr)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
    for p in (spec_path, log):
        p.unlink(missing_ok=True)
    # the daemon's error text may carry its own "fix:" line: keep one error/fix pair
    msg, _, fix = str(state.get("error") or state).partition("\n  fix: ")
    raise K3sError(f"k3s start failed: {msg.strip()}",
                   hint=fix.strip() or "read the k3s log lines above; `k3snb classify LOG` names known blockers")


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _status(a: argparse.Namespace) -> int:
    ds = _select(a.id)
    rows = [{"id": d.id, "pid": d.owner_pid, **_state(d)} for d in ds]
    if a.json:
        print(json.dumps(rows, default=str, indent=1))
    elif not rows:
        print("no k3s clusters running")
    for r in rows if not a.json else []:
        c = r.get("cluster", {})
        print(f"{r['id']}  state={r.get('state')}  profile={r.get('profile')}  runner={r.get('runner')}  "
              f"alive={c.get('alive')}  reached={c.get('reached')}  log={c.get('log')}")
    return 0


def _stop(a: argparse.Namespace) -> int:
    ds = _select(a.id)
    if not ds:
        print("no k3s clusters running")
        return 0
    for d in ds:
        os.kill(d.owner_pid, signal.SIGTERM)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(_reload(d) is not None and d.owner_alive() for d in ds):
        time.sleep(0.3)
    left = [d.id for d in ds if _reload(d) is not None and d.owner_alive()]
    for d in ds:
        print(f"{d.id}: {'still running' if d.id in left else 'stopped'}")
    return 1 if left else 0


def _logs(a: argparse.Namespace) -> int:
    ds = _select(a.id)
    if len(ds) != 1:
        raise UsageError(f"{len(ds)} clusters running; name one", hint="k3snb k3s logs ID (see `k3snb k3s status`)")
    log = _state(ds[0]).get("cluster", {}).get("log")
    if not log or not Path(log).exists():
        print("(no log yet)")
        return 0
    lines = Path(log).read_text(errors="replace").splitlines()
    print(printable_lines("\n".join(lines[-a.tail:] if a.tail else lines)))  # log text: no terminal escapes
    if a.follow:
        with open(log, errors="replace") as f:
            f.seek(0, 2)
            try:
                while ds[0].owner_alive():
                    line = f.readline()
                    if line:
                        print(printable_lines(line.rstrip("\n")), flush=True)
                    else:
                        time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    return 0


def _install(a: argparse.Namespace) -> int:
    from .binary import install_k3s

    b = install_k3s(a.version, timeout=a.timeout)
    print(f"installed {b.version.version} at {b.path}")
    return 0


def _profiles(a: argparse.Namespace) -> int:
    from .profiles import list_profiles

    table = list_profiles()
    if a.json:
        for row in table.to_frame().to_dict(orient="records"):
            print(json.dumps(row, default=str))
    else:
        from .._cliopts import text_table

        print(text_table(table.rows, [("name", "profile", 18), ("title", "title", 40), ("agent", "agent", 5),
                                      ("workarounds", "workarounds", 30), ("flags", "flags", 34),
                                      ("target_stage", "target", 16)]))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m k3snb.k3s._cli ARGS`` = ``k3snb k3s ARGS`` (same parser, same error/fix output)."""
    from ..cli import main as cli_main

    return cli_main(["k3s", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
