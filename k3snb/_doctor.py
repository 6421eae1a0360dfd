"""``doctor()`` / ``k3snb doctor [--clean] [--json]``: what the kit can use here (runsc builds, runc,
containerd, CNI plugins, k3s) and what killed runs left behind; ``clean=True`` reaps it.

The top of the kit (it asks every layer): the reaping itself is :mod:`k3snb.runners.reaper`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._state import Record, records
from .errors import K3sError, MissingDependency
from .report import Rich, render
from .runners.reaper import clean_cgroups, clean_records, orphans, stale_cgroups

CNI_DIRS = ("/usr/lib/cni", "/opt/cni/bin")


def _first_line(argv: list[str]) -> str | None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0] if text else None


def _tool(name: str, version_args: list[str]) -> dict[str, Any]:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                                       if os.access(p, os.X_OK)), None)
    return {"item": name, "path": path, "version": _first_line([path, *version_args]) if path else None,
            "available": path is not None}


def installed() -> list[dict[str, Any]]:
    """One row per component: runsc builds, runc, containerd, CNI plugins, k3s."""
    from .k3s.binary import find_k3s
    from .runners.runsc import list_runsc_builds

    rows = [{"item": f"runsc {r['build']}", "path": r["path"], "version": r["version"], "available": r["available"]}
            for r in list_runsc_builds().rows]
    rows.append(_tool("runc", ["--version"]))
    rows.append(_tool("containerd", ["--version"]))
    cni = next((d for d in CNI_DIRS if Path(d).is_dir()), None)
    plugins = sorted(p.name for p in Path(cni).iterdir()) if cni else []
    rows.append({"item": "CNI plugins", "path": cni, "version": f"{len(plugins)} plugins" if cni else None,
                 "available": bool(plugins)})
    try:
        k = find_k3s()
        rows.append({"item": "k3s", "path": str(k.path), "version": str(k.version) or None, "available": True})
    except (MissingDependency, K3sError) as e:  # not installed, or a binary that does not answer
        rows.append({"item": "k3s", "path": None, "version": None, "available": False,
                     "note": str(e).splitlines()[0][:120]})
    return rows


def _record_row(r: Record) -> dict[str, Any]:
    return {"record": f"{r.kind}-{r.id}", "owner_pid": r.owner_pid, "age_s": round(time.time() - r.created),
            "pids": len(r.pids), "sandboxes": len(r.sandboxes), "mounts": len(r.mounts), "paths": len(r.paths),
            "note": r.note}


@dataclass(repr=False)
class Doctor(Rich):
    """What is installed and what is stale. ``clean()`` removes the stale part."""

    installed: list[dict[str, Any]]
    stale: list[dict[str, Any]]
    stale_cgroups: list[str]
    live: int
    cleaned: list[dict[str, Any]] = field(default_factory=list)
    orphans: list[dict[str, Any]] = field(default_factory=list)

    _title_text = "k3snb doctor"

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.installed)

    def summary(self) -> dict[str, Any]:
        return {"available": sum(1 for r in self.installed if r["available"]), "components": len(self.installed),
                "live_records": self.live, "stale_records": len(self.stale),
                "stale_cgroups": len(self.stale_cgroups), "orphans": len(self.orphans), "cleaned": len(self.cleaned)}

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "installed": self.installed, "stale": self.stale,
                "stale_cgroups": self.stale_cgroups, "orphans": self.orphans, "cleaned": self.cleaned}

    def _repr_text(self) -> str:
        lines = [f"<Doctor {', '.join(f'{k}={v}' for k, v in self.summary().items())}"]
        for r in self.installed:
            mark = "ok " if r["available"] else "-- "
            lines.append(f"  {mark}{r['item']:14} {r['version'] or '':40} {r['path'] or r.get('note', '')}")
        for s in self.stale:
            lines.append(f"  stale {s['record']} (owner {s['owner_pid']} gone, {s['age_s']}s old)")
        for c in self.stale_cgroups:
            lines.append(f"  stale cgroup {c}")
        for o in self.orphans:
            lines.append(f"  orphan pid {o['pid']} of {o['record']} ({o['tag']}): {o['cmd']}")
        for c in self.cleaned:
            lines.append(f"  cleaned {c['record']}: {', '.join(c['actions']) or 'nothing left'}"
                         + (f" (kept: {'; '.join(c['kept'])})" if c["kept"] else ""))
        return "\n".join(lines) + ">"

    def _repr_html_(self) -> str:
        import pandas as pd

        sections = [("installed", self.to_frame())]
        if self.stale:
            sections.append(("stale records", pd.DataFrame(self.stale)))
        if self.stale_cgroups:
            sections.append(("stale cgroups", "\n".join(self.stale_cgroups)))
        if self.orphans:
            sections.append(("orphan processes", pd.DataFrame(self.orphans)))
        if self.cleaned:
            sections.append(("cleaned", pd.DataFrame(self.cleaned)))
        return render(self._title_text, self.summary(), sections, text=self._repr_text())


def doctor(clean: bool = False) -> Doctor:
    """Report installed components and stale leftovers; with ``clean=True`` also reap them."""
    recs = records()
    stale = [r for r in recs if not r.owner_alive()]
    live_ids = {r.id for r in recs if r.owner_alive()}
    d = Doctor(installed(), [_record_row(r) for r in stale], stale_cgroups(live_ids), len(recs) - len(stale),
               orphans=orphans(stale))
    if clean:
        d.cleaned = clean_records(stale)
        d.cleaned += clean_cgroups(d.stale_cgroups)
        left = [r for r in records() if not r.owner_alive()]
        d.stale = [_record_row(r) for r in left]
        d.stale_cgroups = stale_cgroups({r.id for r in records() if r.owner_alive()})
        d.orphans = orphans(stale)
    return d


def clean() -> Doctor:
    """Reap everything stale (records whose owner died, orphan tagged cgroups); returns the report."""
    return doctor(clean=True)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "doctor", help="show what is installed (runsc builds, runc, containerd, CNI, k3s) and stale leftovers",
        description="Report installed components and records of killed runs; --clean reaps what those "
                    "runs left (tagged processes, runsc sandboxes, mounts, temp dirs) and nothing else.",
    )
    p.add_argument("--clean", action="store_true", help="reap stale records (only what the kit created)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    d = doctor(clean=args.clean)
    if args.json:
        sys.stdout.write(json.dumps(d.to_dict(), indent=1, default=str) + "\n")
    else:
        print(_text(d))
    # after --clean, anything still stale is a failure; a plain report only informs
    return 1 if args.clean and (d.stale or d.stale_cgroups or d.orphans) else 0


def _text(d) -> str:
    """The doctor report as readable tables (not a repr); long notes wrap at word boundaries."""
    from ._cliopts import text_table

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
