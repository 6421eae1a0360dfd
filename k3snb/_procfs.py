"""Small readers of /proc/<pid> used to identify and follow the processes the kit starts."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # fields after the ")" that ends comm, which may itself contain spaces or parentheses
    return data[data.rindex(b")") + 2 :].split()


def proc_state(pid: int) -> str | None:
    """The one-letter state (R, S, Z, …) of ``pid``, or None when it is gone."""
    f = _stat_fields(pid)
    return f[0].decode() if f else None


def proc_start(pid: int) -> float | None:
    """Start time of ``pid`` in clock ticks since boot: with the pid, an identity that survives pid reuse."""
    f = _stat_fields(pid)
    try:
        return float(f[19]) if f else None
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int | None) -> bool:
    return bool(pid) and proc_state(pid) not in (None, "Z", "X")


def children(pid: int) -> list[int]:
    """Direct children of ``pid``; every thread has its own list (Go forks from any thread)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        with contextlib.suppress(OSError, ValueError):
            out += [int(x) for x in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    return sorted(set(out))


def descendants(pid: int) -> list[int]:
    """All descendants of ``pid`` (children first, breadth-first)."""
    out: list[int] = []
    todo = children(pid)
    while todo:
        p = todo.pop(0)
        if p not in out:
            out.append(p)
            todo += children(p)
    return out


def proc_environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` started with (empty when unreadable or gone)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def pids_with_env(name: str) -> dict[int, str]:
    """Live pids whose environment has ``name``, with its value (a tag every process of a run inherits)."""
    needle = f"{name}=".encode()
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = Path(f"/proc/{d}/environ").read_bytes()
        except OSError:
            continue
        if needle in raw and pid_alive(int(d)):
            value = proc_environ(int(d)).get(name)
            if value is not None:
                out[int(d)] = value
    return out
