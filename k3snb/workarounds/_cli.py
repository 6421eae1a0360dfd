"""``k3snb workarounds list|show|apply|verify|revert``: the workaround catalogue, and its actions run in
a fresh runner (host namespaces or a gVisor sandbox) that lives as long as the command: nothing stays
applied on the machine afterwards."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._cliopts import add_json, add_param, add_runner, add_runsc, printable

_ACTIONS = {
    "apply": "apply each workaround in order in a fresh runner, verify it is in effect, then undo it all",
    "verify": "verify whether each workaround is already in effect in a fresh runner (nothing is applied)",
    "revert": "apply, revert, then verify each workaround is no longer in effect (tests that revert works)",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "workarounds", help="list, show, apply, verify or revert the research workarounds",
        description="The workaround catalogue (k3snb/data/workarounds.yaml) and its actions. apply/verify/revert "
                    "run in a fresh runner that ends with the command, so the host is only touched inside the "
                    "runner's own namespaces.")
    sub = p.add_subparsers(dest="wa_command", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="list the workarounds", description="List the workaround catalogue.")
    ls.add_argument("--all", action="store_true", help="also list the research W ids the kit does not implement")
    add_json(ls, help="one JSON object per workaround")
    ls.set_defaults(func=_list)
    sh = sub.add_parser("show", help="show one workaround", description="Show one workaround's metadata.")
    sh.add_argument("id", help="workaround id (e.g. kmsg) or research id (e.g. W1)")
    add_json(sh, help="the workaround as one JSON object")
    sh.set_defaults(func=_show)
    for action, text in _ACTIONS.items():
        a = sub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        a.add_argument("ids", nargs="+", metavar="ID", help="workaround ids (e.g. kmsg propagation) or W ids")
        add_runner(a, help="where to act: host (private namespaces), gvisor, gvisor:BUILD[:PLATFORM] (default host)")
        add_runsc(a)
        add_param(a, help="workaround parameter KEY=VALUE (ID:KEY=VALUE targets one workaround); repeatable")
        add_json(a, help="one JSON object per result")
        a.set_defaults(func=_act, action=action)


def _list(args: argparse.Namespace) -> int:
    from . import list_workarounds

    table = list_workarounds(include_research_only=args.all)
    if args.json:
        for row in table.rows:
            print(json.dumps(row, default=str))
        return 0
    rows = table.rows
    w = max(len(r["id"]) for r in rows)
    for r in rows:
        extra = f"  [{r['research']}]" if r["research"] and r["research"] != r["id"] else ""
        fixes = f"  fixes {r['signatures']}" if r["signatures"] else ""
        print(f"{r['id']:<{w}}  {r['kind']:<13}  {r['title']}{extra}{fixes}")
    return 0


def _record(w) -> dict[str, Any]:
    return {"id": w.id, "title": w.title, "kind": w.kind, "research": w.research, "fixes": w.fixes,
            "flags": w.flags(), "parameters": {k: repr(v) for k, v in w.options.items()},
            "description": w.description}


def _show(args: argparse.Namespace) -> int:
    from . import get_workaround

    rec = _record(get_workaround(args.id))
    if args.json:
        print(json.dumps(rec))
        return 0
    print(f"{rec['id']}: {rec['title']}")
    for key in ("kind", "research", "fixes", "flags", "parameters"):
        v = rec[key]
        shown = ", ".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else (
            " ".join(v) if isinstance(v, list) else v)
        print(f"  {key + ':':<11} {shown or '(none)'}")
    print(f"  {'about:':<11} {rec['description']}")
    return 0


def _params(ids: list[str], items: list[str]) -> dict[str, dict[str, Any]]:
    """-p KEY=VALUE (one workaround) or ID:KEY=VALUE -> {id: {key: value}}; values typed like YAML."""
    import yaml

    from ..errors import InvalidParameter

    out: dict[str, dict[str, Any]] = {i: {} for i in ids}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidParameter(f"malformed parameter {item!r}", hint="write -p KEY=VALUE or -p ID:KEY=VALUE")
        target, _, name = key.rpartition(":")
        if not target:
            if len(ids) != 1:
                raise InvalidParameter(f"parameter {key!r} is ambiguous with {len(ids)} workarounds",
                                       hint="write -p ID:KEY=VALUE")
            target = ids[0]
        if target not in out:
            raise InvalidParameter(f"parameter {item!r} names {target!r}, which is not among {ids}",
                                   hint="use an id given on the command line")
        try:
            out[target][name] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[target][name] = value
    return out


def _act(args: argparse.Namespace) -> int:
    from ..runners import check_spec
    from . import get_workaround

    runner = check_spec(args.runner, runsc=args.runsc)  # built, not started
    params = _params(args.ids, args.param)
    ws = [get_workaround(i, **params[i]) for i in args.ids]  # bad ids/params fail before any runner starts
    results = []
    with runner:
        try:
            if args.action == "verify":
                results = [w.verify(runner) for w in ws]
            else:
                for w in ws:
                    results.append(w.apply(runner))
                    results.append(w.verify(runner))
                if args.action == "revert":
                    for w in reversed(ws):
                        results.append(w.revert(runner))
                        after = w.verify(runner)
                        after.action, after.ok = "gone", not after.ok  # revert worked = no longer in effect
                        results.append(after)
        finally:
            for w in reversed(ws):  # nothing stays applied, also after an error or Ctrl-C
                if w.applied:
                    w.revert(runner)
    for r in results:
        if args.json:
            print(json.dumps({**r.summary(), "detail": r.detail}, default=str))
        else:
            detail = printable("; ".join(f"{k}={v}" for k, v in r.detail.items()))
            print(f"{r.id:<18} {r.action:<7} {'ok' if r.ok else 'NO':<3} {detail[:150]}")
    bad = [r for r in results if not r.ok]
    if bad and not args.json:
        print(f"{len(bad)} of {len(results)} steps not ok", file=sys.stderr)
    return 1 if bad else 0
