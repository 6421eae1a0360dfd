"""A fake ``/proc/sys`` as per-file redirect rules, built from ``procsys.yaml`` and a probe.

Per file, never a directory prefix: a directory map also redirects e.g. runc's ``statfs("/proc/sys")``
and hides keys the sandbox does provide (ptrace-feasibility §4.2, seed-catalog §6.4 item 3).
Values are what a stock kernel shows (``linux_default``), or the probed value when the key is
readable but not writable, so programs that read before writing see a plausible number.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter
from ._rules import Rule


def _records(probe: Any) -> Mapping[str, Mapping[str, Any]] | None:
    if probe is None:
        return None
    if isinstance(probe, Mapping):
        return probe.get("proc_sys", probe)  # a raw probe dict or {key: record}
    data = getattr(probe, "data", None)
    if isinstance(data, Mapping) and "proc_sys" in data:
        return data["proc_sys"]
    raise InvalidParameter(f"cannot read /proc/sys records from {type(probe).__name__}",
                           hint="pass the EnvProbe returned by k3snb.probe(runner), or None to fake every key")


def fake_procsys(dest: str | os.PathLike, probe: Any = None, *, users: Iterable[str] | None = None,
                 keys: Iterable[str] | None = None, values: Mapping[str, str] | None = None) -> list[Rule]:
    """Write fake /proc/sys files under ``dest`` and return one redirect :class:`Rule` per file.

    Args:
        dest: directory for the files; it must be visible to the traced processes (for a runner,
            put it under ``runner.workdir``; inside a container rootfs, copy it there).
        probe: an EnvProbe (``k3snb.probe(runner)``): only keys that are missing there, or that
            the users write (access "rw") but cannot, are faked. None = fake every listed key.
        users: only keys used by these components (kubelet, kube-proxy, runc, containerd, k3s, flannel).
        keys: only these keys (relative to /proc/sys, e.g. "kernel/panic").
        values: override values per key.

    Returns:
        ``[Rule.redirect('/proc/sys/<key>', '<dest>/<key>'), ...]`` in procsys.yaml order.
    """
    from ..probing import procsys_keys

    table = procsys_keys()
    known = {k["key"] for k in table}
    if keys is not None:
        keys = set(keys)
        bad = keys - known
        if bad:
            raise InvalidParameter(f"unknown /proc/sys key(s) {sorted(bad)}",
                                   hint="see k3snb.probing.procsys_keys() for the listed keys")
    if values:
        bad = set(values) - known
        if bad:
            raise InvalidParameter(f"values for unlisted key(s) {sorted(bad)}",
                                   hint="see k3snb.probing.procsys_keys() for the listed keys")
    users = set(users) if users is not None else None
    recs = _records(probe)
    root = Path(dest)
    rules = []
    for k in table:
        key = k["key"]
        if keys is not None and key not in keys:
            continue
        if users is not None and not users & set(k.get("users", [])):
            continue
        value = None
        if recs is not None:
            r = recs.get(key)
            if r is not None and r.get("present"):
                if k.get("access") != "rw" or r.get("writable"):
                    continue  # the environment already provides a usable file
                value = r.get("value") if r.get("readable") else None
        if values and key in values:
            value = values[key]
        if value is None:
            value = k.get("linux_default")
        if value is None:
            continue
        f = root / key
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(str(value).rstrip("\n") + "\n")
        rules.append(Rule.redirect("/proc/sys/" + key, str(f.resolve()), prefix=False,
                                   note=f"fake /proc/sys ({', '.join(k.get('users', []))})"))
    return rules
