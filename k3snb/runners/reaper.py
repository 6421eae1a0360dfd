"""The reaper: what a killed run left behind (stale records, their live orphans, empty tagged cgroups)
and :func:`clean_records`, which removes it. The report around it is :func:`k3snb.doctor`.

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
from pathlib import Path
from typing import Any

from .._paths import TAG
from .._procfs import pids_with_env, proc_start
from .._state import RUN_TAG_ENV, Record
from .._system import kill, kill_tree, mountinfo, umount, wait_gone

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_busy(d: Path) -> bool:
    """Does any cgroup in ``d``'s subtree hold a task? (unreadable counts as busy)"""
    for sub, _dirs, _files in os.walk(d):
        try:
            if (Path(sub) / "cgroup.procs").read_text().strip():
                return True
        except OSError:
            return True
    return False


def stale_cgroups(live_ids: set[str]) -> list[str]:
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


def clean_cgroups(paths: list[str]) -> list[dict[str, Any]]:
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
