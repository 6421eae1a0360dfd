"""``doctor()`` — what the kit can use here and what a killed run left behind; ``clean()`` reaps it.

Only things the kit tagged are touched: a stale :class:`k3snb._state.Record` (its owner process is
gone) names its pids (checked against their recorded start time), runsc sandboxes (a tagged
``--root`` dir plus container id), mounts and paths (whose names carry the ``k3snb`` tag).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._paths import TAG
from .._procfs import pids_with_env, proc_start
from .._state import RUN_TAG_ENV, Record, records
from .._system import kill, kill_tree, mountinfo, umount, wait_gone
from ..report import Rich, render

CGROUP_ROOT = Path("/sys/fs/cgroup")
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
    from .runsc import list_runsc_builds

    rows = [{"item": f"runsc {r['build']}", "path": r["path"], "version": r["version"], "available": r["available"]}
            for r in list_runsc_builds().rows]
    rows.append(_tool("runc", ["--version"]))
    rows.append(_tool("containerd", ["--version"]))
    cni = next((d for d in CNI_DIRS if Path(d).is_dir()), None)
    plugins = sorted(p.name for p in Path(cni).iterdir()) if cni else []
    rows.append({"item": "CNI plugins", "path": cni, "version": f"{len(plugins)} plugins" if cni else None,
                 "available": bool(plugins)})
    try:  # k3s discovery belongs to another layer; it may not exist yet in this build
        from ..k3s.binary import find_k3s

        try:
            k = find_k3s()
            rows.append({"item": "k3s", "path": str(getattr(k, "path", k)),
                         "version": str(getattr(k, "version", "")) or None, "available": True})
        except Exception as e:
            rows.append({"item": "k3s", "path": None, "version": None, "available": False,
                         "note": str(e).splitlines()[0][:120]})
    except Exception:
        rows.append({"item": "k3s", "path": None, "version": None, "available": False,
                     "note": "k3snb.k3s not importable"})
    return rows


def _cgroup_busy(d: Path) -> bool:
    """Does any cgroup in ``d``'s subtree hold a task? (unreadable counts as busy)"""
    for sub, _dirs, _files in os.walk(d):
        try:
            if (Path(sub) / "cgroup.procs").read_text().strip():
                return True
        except OSError:
            return True
    return False


def _stale_cgroups(live_ids: set[str]) -> list[str]:
    """runsc creates ``/sys/fs/cgroup/<ctrl>/<container id>``; ours carry the tag in the id. A tagged
    cgroup with a task anywhere below it belongs to something running (perhaps of another state dir)."""
    out = []
    with contextlib.suppress(OSError):
        for ctrl in CGROUP_ROOT.iterdir():
            with contextlib.suppress(OSError):
                for d in ctrl.glob(f"{TAG}-*"):
                    if not d.is_dir() or any(d.name.startswith(i) for i in live_ids):
                        continue
                    if not _cgroup_busy(d):
                        out.append(str(d))
    return sorted(out)


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
    d = Doctor(installed(), [_record_row(r) for r in stale], _stale_cgroups(live_ids), len(recs) - len(stale),
               orphans=orphans(stale))
    if clean:
        d.cleaned = clean_records(stale)
        d.cleaned += _clean_cgroups(d.stale_cgroups)
        left = [r for r in records() if not r.owner_alive()]
        d.stale = [_record_row(r) for r in left]
        d.stale_cgroups = _stale_cgroups({r.id for r in records() if r.owner_alive()})
        d.orphans = orphans(stale)
    return d


def orphans(stale: list[Record]) -> list[dict[str, Any]]:
    """Live processes tagged (``$K3SNB_RUN_TAG``) with the id of a stale record: what a killed run
    left running. Only records of this state dir count, so another user's or test's runs are safe."""
    ids = {r.id: r for r in stale}
    if not ids:
        return []
    me = os.getpid()
    out = []
    for pid, tag in sorted(pids_with_env(RUN_TAG_ENV).items()):
        rid = tag.split("/", 1)[0]
        if pid == me or rid not in ids:
            continue
        cmd = ""
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        out.append({"record": f"{ids[rid].kind}-{rid}", "pid": pid, "tag": tag, "cmd": cmd[:160]})
    return out


def clean() -> Doctor:
    """Reap everything stale (records whose owner died, orphan tagged cgroups); returns the report."""
    return doctor(clean=True)


# -- reaping ------------------------------------------------------------------------------------


def _pid_matches(r: Record, pid: int) -> bool:
    """Is ``pid`` still the process the record tagged? (pids are reused; start times are not.)"""
    now = proc_start(pid)
    if now is None:
        return False
    recorded = r.pid_starts.get(str(pid))
    if recorded is not None:
        return now == recorded
    # older records without a start time: accept only a process whose command line names the record
    with contextlib.suppress(OSError):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        return r.id.encode() in cmd or any(p.encode() in cmd for p in r.paths if TAG in p)
    return False


def _umount(path: str) -> bool:
    try:
        umount(path)  # lazily: a busy mount is detached now and freed when its last user goes
        return True
    except OSError:
        return False


def _mounted(path: str) -> bool:
    return any(m.mountpoint == path for m in mountinfo())


def _reap_sandbox(sb: dict, actions: list[str], kept: list[str]) -> None:
    root, cid, runsc = sb.get("root"), sb.get("id"), sb.get("runsc")
    if not root or TAG not in root or not cid:
        kept.append(f"sandbox {sb!r}: not a tagged root, left alone")
        return
    if Path(root).is_dir() and runsc and os.access(runsc, os.X_OK):
        ids = {cid}
        with contextlib.suppress(Exception):
            out = subprocess.run([runsc, f"--root={root}", "list", "-quiet"], capture_output=True, text=True,
                                 timeout=20).stdout
            ids |= set(out.split())  # the root dir is ours, so is every container in it
        for c in sorted(ids):
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                r = subprocess.run([runsc, f"--root={root}", "delete", "--force", c], capture_output=True,
                                   text=True, timeout=30)
                if r.returncode == 0:
                    actions.append(f"runsc delete {c}")
    from .gvisor import _remove_cgroups, pids_with_root

    left = pids_with_root(root)
    for p in left:  # identity: their command line carries our tagged --root path
        if kill(p):
            actions.append(f"kill {p} (runsc with our root)")
    wait_gone(left)
    if cid.startswith(TAG):  # runsc's per-container cgroups, named by our tagged id
        base_id = cid.split("-r", 1)[0] if re.search(r"-r\d+$", cid) else cid
        before = {str(d) for d in CGROUP_ROOT.glob(f"*/{base_id}*")}
        left = _remove_cgroups([base_id, f"{base_id}-r*"])
        actions += [f"rmdir {d}" for d in sorted(before - set(left))]
        kept += [f"cgroup {d} (busy)" for d in left]


def clean_records(recs: list[Record]) -> list[dict[str, Any]]:
    """Reap the given (stale) records: sandboxes, then pids, mounts, paths; drop each record when done."""
    report = []
    for r in recs:
        if r.owner_alive():
            continue  # never reap what a live process still owns
        actions: list[str] = []
        kept: list[str] = []
        killed = []
        # first what the killed run left running (tagged by environment), so nothing restarts work
        for o in orphans([r]):
            for p in kill_tree(o["pid"]):
                killed.append(p)
                actions.append(f"kill {p} (orphan of the run, tag {o['tag']})")
        wait_gone(killed)
        for sb in r.sandboxes:
            _reap_sandbox(sb, actions, kept)
        for pid in r.pids:
            if _pid_matches(r, pid):
                if r.kind == "host":  # a Host runner's private mount namespace: all in it is ours
                    from .host import _in_mount_ns

                    killed += [other for other in _in_mount_ns(pid) if kill(other)]
                # what a tagged process started is ours too (a kernel's children outlive a kill -9
                # of the run before the run could tag them)
                for p in kill_tree(pid):
                    killed.append(p)
                    actions.append(f"kill {p}" + (f" (child of {pid})" if p != pid else ""))
        wait_gone(killed)
        for m in reversed(r.mounts):
            if _mounted(m):
                if TAG in m and _umount(m):
                    actions.append(f"umount {m}")
                else:
                    kept.append(f"mount {m}")
        for p in r.paths:
            path = Path(p)
            if not path.exists() and not path.is_symlink():
                continue
            if TAG not in path.name:
                kept.append(f"path {p}: name lacks the {TAG!r} tag")
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
            (kept if path.exists() else actions).append(f"rm {p}")
        if not any(k.startswith(("rm ", "mount ")) for k in kept):
            r.drop()
        report.append({"record": f"{r.kind}-{r.id}", "actions": actions, "kept": kept})
    return report


def _clean_cgroups(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        # deepest first; rmdir only succeeds for a cgroup without tasks: nothing running is touched
        subs = sorted((d for d, _, _ in os.walk(p)), key=len, reverse=True)
        for d in subs:
            with contextlib.suppress(OSError):
                os.rmdir(d)
        if not os.path.exists(p):
            out.append({"record": "cgroup", "actions": [f"rmdir {p}"], "kept": []})
    return out
