"""``k3snb classify FILE... [--json]`` and ``k3snb signatures [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .._cliopts import add_json, printable

_TEXT = 240  # characters of a matched line shown in text output


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "classify", help="match logs against the blocker signatures",
        description="Match each line of one or more logs against the blocker signatures and progress "
                    "markers; prints the matched lines, then each blocker with its root cause and fix.")
    p.add_argument("files", nargs="+", metavar="FILE", help="log file (.gz ok), or - for stdin; several allowed")
    add_json(p, help="one JSON object per matched line (with a 'file' key when several files are given)")
    p.add_argument("--failures-only", action="store_true", help="skip progress markers (show failures only)")
    p.set_defaults(func=_classify)
    s = subparsers.add_parser("signatures", help="list the blocker signatures and progress markers",
                              description="List the signature catalogue (k3snb/data/signatures.yaml).")
    add_json(s, help="one JSON object per signature")
    s.set_defaults(func=_signatures)


def _fixes() -> dict[str, str]:
    """research W id -> "slug (title)" of the workaround implementing it."""
    from ..workarounds._base import metadata

    out: dict[str, str] = {}
    for slug, m in metadata().items():
        for w in m.get("research", []):
            out.setdefault(str(w), f"{slug} ({m['title']})")
    return out


def _check(files: list[str]) -> None:
    """Refuse a missing, directory or unreadable path before printing anything."""
    from ..errors import UsageError

    if files.count("-") > 1:
        raise UsageError("stdin ('-') given more than once", hint="pass '-' at most once")
    for f in files:
        if f == "-":
            continue
        p = Path(f)
        if not p.exists():
            raise UsageError(f"log file {f} does not exist", hint="pass an existing log path, or '-' for stdin")
        if p.is_dir():
            raise UsageError(f"{f} is a directory", hint="pass a log file (e.g. <data-dir>/k3s.log)")
        try:
            with open(p, "rb"):
                pass
        except OSError as e:
            raise UsageError(f"cannot read {f}: {e.strerror}", hint="check the file's permissions") from None


def _classify(args: argparse.Namespace) -> int:
    from ._classify import classify, load_catalog

    _check(args.files)
    kinds = ("failure",) if args.failures_only else ("failure", "progress")
    many = len(args.files) > 1
    cat = load_catalog()
    fixes = _fixes() if not args.json else {}
    for name in args.files:
        src = sys.stdin if name == "-" else Path(name)
        res = classify(src, kinds=kinds)
        label = "(stdin)" if name == "-" else name
        prefix = f"{printable(label)}:" if many else ""
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
                if many:
                    rec = {"file": label, **rec}
                print(json.dumps(rec))  # ASCII-only: escape sequences in log text stay escaped
            else:
                text = ms[0]["text"]
                short = printable(text[:_TEXT]) + ("…" if len(text) > _TEXT else "")
                print(f"{prefix}{line}:{','.join(ids)}: {short}")
        if not args.json:
            _print_blockers(res, cat, fixes, prefix)
        s = res.summary()
        print(f"# {prefix + ' ' if prefix else ''}{s['lines']} lines, furthest stage: {s['furthest_stage']}, blockers: {s['blockers']}, "
              f"first fatal: {s['first_fatal']}", file=sys.stderr)
    return 0


def _print_blockers(res, cat, fixes: dict[str, str], prefix: str) -> None:
    # aggregated here without pandas: the CLI stays quick to start
    seen: dict[str, dict] = {}
    for m in res.matches:
        if m["kind"] == "failure":
            b = seen.setdefault(m["id"], {"count": 0, "first": m["line"]})
            b["count"] += 1
            b["last"] = m["line"]
    if not seen:
        return
    print(f"{prefix}blockers:" if prefix else "blockers:")
    for sid, b in seen.items():
        sig = cat.get(sid)
        lines = f"line {b['first']}" if b["count"] == 1 else f"{b['count']}x, lines {b['first']}-{b['last']}"
        print(f"  {sid} [{sig.severity}, {sig.stage}] {sig.title} ({lines})")
        print(f"      cause: {sig.root_cause or 'not recorded'}")
        if sig.workarounds:
            fix = "; ".join(f"{w}: {fixes[w]}" if w in fixes else f"{w} (research only, no kit action)"
                            for w in sig.workarounds)
            print(f"      fix:   {fix}")
            names = [fixes[w].split(" ", 1)[0] for w in sig.workarounds if w in fixes]
            if names:
                print(f"             see `k3snb workarounds show {names[0]}`")
        else:
            print("      fix:   none known (see the signature's source in `k3snb signatures --json`)")


def _signatures(args: argparse.Namespace) -> int:
    from ._classify import load_catalog

    for s in load_catalog().signatures:
        if args.json:
            print(json.dumps(s.record(), ensure_ascii=False))
        else:
            print(f"{s.id:5} {s.kind:8} {s.stage:22} {s.component:22} {s.title}")
    return 0
