"""Functions called inside a runner (``runner.run_python``): cgroup trees, mounts, processes."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_mounts() -> list[dict[str, str]]:
    """cgroup / cgroup2 mounts as this process sees them (mountpoint, type, super options); paths unescaped."""
    from .._system import mountinfo

    return [{"mountpoint": m.mountpoint, "type": m.fstype, "options": m.super_options}
            for m in mountinfo() if m.fstype in ("cgroup", "cgroup2")]


def cgroup_dirs(name: str) -> list[str]:
    """Every ``<controller mount>/<name>`` directory that exists (name = a kit-tagged cgroup parent)."""
    seen, out = set(), []
    for m in cgroup_mounts():
        d = os.path.join(m["mountpoint"], name.strip("/"))
        real = os.path.realpath(d)
        if real not in seen and os.path.isdir(d):
            seen.add(real)
            out.append(d)
    return out


def _procs_under(d: str) -> set[int]:
    pids: set[int] = set()
    for dirpath, _dirs, _files in os.walk(d):
        with contextlib.suppress(OSError), open(os.path.join(dirpath, "cgroup.procs")) as f:
            pids.update(int(x) for x in f.read().split() if x.strip())
    return pids


def cgroup_remove(name: str, grace: float = 3.0) -> dict[str, Any]:
    """Kill every process in the cgroup tree ``name`` (all controllers), then rmdir it bottom-up."""
    dirs = cgroup_dirs(name)
    killed: set[int] = set()
    for d in dirs:
        killed |= _procs_under(d)
    for pid in killed:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    left: list[str] = []
    deadline = time.monotonic() + grace
    for d in dirs:
        while True:
            fails = []
            for dirpath, _dirs, _files in sorted(os.walk(d), key=lambda t: -len(t[0])):
                try:
                    os.rmdir(dirpath)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    fails.append(f"{dirpath}: {e.strerror}")
            if not fails or time.monotonic() > deadline:
                left += fails
                break
            time.sleep(0.1)  # killed tasks leave the cgroup when they are reaped
    return {"dirs": dirs, "killed": sorted(killed), "left": left}


def extract_layers(archive: str, digests: list[str], rootfs: str) -> dict[str, Any]:
    """Unpack image layers (bottom first) from an OCI archive into ``rootfs`` (direct runs)."""
    import tarfile

    os.makedirs(rootfs, exist_ok=True)
    t0 = time.monotonic()
    with tarfile.open(archive) as outer:
        for dg in digests:
            f = outer.extractfile(f"blobs/sha256/{dg.split(':', 1)[1]}")
            if f is None:
                raise FileNotFoundError(f"layer {dg} missing in {archive}")
            with tarfile.open(fileobj=f, mode="r|*") as layer:
                try:
                    layer.extractall(rootfs, filter="tar")
                except TypeError:  # Python without extraction filters (< 3.11.4): trusted kit archives
                    layer.extractall(rootfs)
    return {"seconds": time.monotonic() - t0}
