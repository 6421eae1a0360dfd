"""``k3snb classify FILE [--json]`` and ``k3snb signatures [--json]``."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("classify", help="match a log against the blocker signatures")
    p.add_argument("file", help="log file (.gz ok), or - for stdin")
    p.add_argument("--json", action="store_true", help="one JSON object per matched line")
    p.add_argument("--failures-only", action="store_true", help="skip progress markers")
    p.set_defaults(func=_classify)
    s = subparsers.add_parser("signatures", help="list the blocker signatures and progress markers")
    s.add_argument("--json", action="store_true", help="one JSON object per signature")
    s.set_defaults(func=_signatures)


def _classify(args: argparse.Namespace) -> int:
    from ._classify import classify

    kinds = ("failure",) if args.failures_only else ("failure", "progress")
    res = classify(sys.stdin if args.file == "-" else _path(args.file), kinds=kinds)
    by_line: dict[int, list[dict]] = {}
    for m in res.matches:
        by_line.setdefault(m["line"], []).append(m)
    for line, ms in by_line.items():
        ids = [m["id"] for m in ms]
        if args.json:
            rec = {"line": line, "ids": ids, "kinds": sorted({m["kind"] for m in ms}),
                   "stages": list(dict.fromkeys(m["stage"] for m in ms)),
                   "components": list(dict.fromkeys(m["component"] for m in ms)),
                   "workarounds": list(dict.fromkeys(w for m in ms for w in m["workarounds"])),
                   "text": ms[0]["text"]}
            print(json.dumps(rec, ensure_ascii=False))
        else:
            text = ms[0]["text"]
            print(f"{line}:{','.join(ids)}: {text[:240]}{'…' if len(text) > 240 else ''}")
    s = res.summary()
    print(f"# {s['lines']} lines, furthest stage: {s['furthest_stage']}, blockers: {s['blockers']}, "
          f"first fatal: {s['first_fatal']}", file=sys.stderr)
    return 0


def _path(name: str):
    from pathlib import Path

    return Path(name)


def _signatures(args: argparse.Namespace) -> int:
    from ._classify import load_catalog

    for s in load_catalog().signatures:
        if args.json:
            print(json.dumps(s.record(), ensure_ascii=False))
        else:
            print(f"{s.id:5} {s.kind:8} {s.stage:22} {s.component:22} {s.title}")
    return 0
