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
        print(_text(d))
    # after --clean, anything still stale is a failure; a plain report only informs
    return 1 if args.clean and (d.stale or d.stale_cgroups or d.orphans) else 0


def _text(d) -> str:
    """The doctor report as readable tables (not a repr); long notes wrap at word boundaries."""
    from .._cliopts import text_table

    s = d.summary()
    out = [f"k3snb doctor: {s['available']} of {s['components']} components available; "
           f"{s['live_records']} live records, {s['stale_records']} stale, {s['stale_cgroups']} stale cgroups, "
           f"{s['orphans']} orphan processes" + (f", {s['cleaned']} cleaned" if d.cleaned else ""), ""]
    rows = [{"item": r["item"], "ok": "ok" if r["available"] else "missing", "version": r.get("version") or "",
             "where": r.get("path") or r.get("note") or ""} for r in d.installed]
    out.append(text_table(rows, [("item", "component", 14), ("ok", "status", 7), ("version", "version", 28),
                                 ("where", "path or note", 60)]))
    if d.stale:
        out += ["", "stale records (their owner died; `k3snb doctor --clean` reaps them):"]
        out.append(text_table([{**r, "age": f"{r.get('age_s')}s"} for r in d.stale],
                              [("record", "record", 40), ("owner_pid", "owner", 8), ("age", "age", 10)], indent="  "))
    for c in d.stale_cgroups:
        out.append(f"  stale cgroup {c}")
    if d.orphans:
        out += ["", "orphan processes of dead runs:"]
        out.append(text_table(d.orphans, [("pid", "pid", 8), ("record", "record", 30), ("tag", "tag", 20),
                                          ("cmd", "command", 60)], indent="  "))
    if d.cleaned:
        out += ["", "cleaned:"]
        out.append(text_table([{"record": c["record"], "actions": ", ".join(c["actions"]) or "nothing left",
                                "kept": "; ".join(c["kept"])} for c in d.cleaned],
                              [("record", "record", 40), ("actions", "removed", 40), ("kept", "kept", 40)],
                              indent="  "))
    return "\n".join(out)
