"""Notebook 30: Exp 30's "unsupported shim version (3)" (S38) — gVisor, or a daemon/shim version mismatch?

Evidence is :func:`k3snb.runtime.shim_probes.shim_matrix` rows (env, shim, ran, error, signature). Only
containerd 1.6 and its own shims are installed, so the research's exact pairing (a 1.7.28 daemon, a 2.x
shim) is not run; each reason says which binaries ran and what they could not show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..experiments._record import Verdict
from ._core import judged

Rows = Sequence[Mapping[str, Any]]
MATCHED = "io.containerd.runc.v2"
V3 = "v3-bootstrap shim"


def _pick(rows: Rows, **kw: Any) -> Mapping[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in kw.items())), None)


def _short(r: Mapping[str, Any]) -> str:
    """The informative tail of a ctr error: after 'start failed:' / 'ctr:', at most 90 characters."""
    text = str(r.get("error") or "")
    for mark in ("start failed: ", "ctr: "):
        if mark in text:
            text = text.split(mark, 1)[1]
            break
    return (r.get("signature") + ": " if r.get("signature") else "") + text[:90]


def _envs(rows: Rows) -> list[str]:
    return list(dict.fromkeys(str(r["env"]) for r in rows))


def shim_blocks_gvisor(rows: Rows, containerd: str, key: str = "shims") -> Verdict:
    """S38 as the research reads it ("gVisor lacks shim v3 support; containerd shim compatibility with gVisor is
    the final blocker"), per gVisor build: does containerd's own shim (``io.containerd.runc.v2``, the same
    version as the daemon) start a container in the sandbox?

    refuted: it runs there (the shim works in gVisor when daemon and shim match); reproduced: it fails in
    gVisor although it runs on the host; inconclusive: it fails on the host too (nothing gVisor-specific);
    not-testable: no gVisor row reached the shim (e.g. the image unpack failed first)."""
    host = _pick(rows, env="host", shim=MATCHED)
    per: dict[str, tuple[str, str]] = {}
    for env in _envs(rows):
        if not env.startswith("gvisor"):
            continue
        r = _pick(rows, env=env, shim=MATCHED)
        if r is None:
            continue
        others = ", ".join(f"{o['shim']} {'runs' if o['ran'] else 'fails (' + _short(o) + ')'}"
                           for o in rows if o["env"] == env and o["shim"] != MATCHED)
        if r["ran"]:
            per[env] = ("refuted", f"containerd's own runc.v2 shim runs the container; {others}")
        elif r.get("signature") == "R01" or "failed to extract layer" in str(r["error"]) \
                or "image import/unpack failed" in str(r["error"]):
            per[env] = ("not-testable", "the image unpack fails before any shim starts")
        elif host is not None and host["ran"]:
            per[env] = ("reproduced", f"the matched shim fails only in gVisor: {_short(r)}")
        else:
            per[env] = ("inconclusive", f"the matched shim fails on the host too: {_short(r)}")
    decided = {s for s, _ in per.values() if s != "not-testable"}
    reason = f"{containerd} and its shims — " + "; ".join(f"{e}: {w}" for e, (_, w) in sorted(per.items()))
    if not decided:
        return judged("S38", "not-testable", {}, reason if per else "no containerd run in a gVisor sandbox",
                      environments=sorted(per) if per else None)
    status = decided.pop() if len(decided) == 1 else "inconclusive"
    return judged("S38", status, {key: list(rows)}, reason + ("; the builds disagree" if status == "inconclusive"
                                                              and len(per) > 1 else "")
                  + "; the research's 1.7.28 daemon + 2.x shim pair is not installed here",
                  environments=sorted(e for e, (s, _) in per.items() if s != "not-testable"))


def shim_version_mismatch(rows: Rows, containerd: str, key: str = "shims") -> Verdict:
    """The catalog's analysis of S38 ("a 1.7 daemon talking to a 2.x shim binary: a version mismatch, not
    evidence about gVisor"), judged with the binaries at hand: a shim that answers ``start`` with the v3
    bootstrap JSON, run by containerd 1.6, on the host and in each gVisor build where the matched shim runs.

    reproduced: the mismatched shim fails with the same error on the host and in every such build (the
    outcome depends on the daemon/shim pairing, not on the sandbox); refuted: it fails in gVisor but not on
    the host, or the errors differ; not-testable: no gVisor build where the matched shim runs, or no host row.
    1.6 predates the v3 protocol, so the reason gives its own text, not S38's."""
    host = _pick(rows, env="host", shim=V3)
    usable = [e for e in _envs(rows) if e.startswith("gvisor") and (m := _pick(rows, env=e, shim=MATCHED)) and m["ran"]]
    if host is None or not usable:
        return judged("S38: version mismatch", "not-testable", {},
                      f"{containerd}: needs the host and a gVisor build where containerd's own shim runs")
    ev = {key: list(rows)}
    envs = ["host", *usable]  # a host-vs-gVisor comparison speaks for both sides
    diff = []
    for e in usable:
        g = _pick(rows, env=e, shim=V3)
        if g is None:
            continue
        if g["ran"] != host["ran"] or g["error"] != host["error"]:
            diff.append(f"{e}: {'runs' if g['ran'] else _short(g)}")
    text = _short(host) if not host["ran"] else "it runs"
    if diff:
        return judged("S38: version mismatch", "refuted", ev, f"{containerd} + a v3-bootstrap shim: host: {text}; "
                      + "; ".join(diff), envs)
    return judged("S38: version mismatch", "reproduced", ev,
                  f"{containerd} + a shim answering `start` with the v3 bootstrap JSON fails identically on the host and "
                  f"in {', '.join(usable)} ({text}) — the daemon's shim protocol decides, not the sandbox; 1.6 predates "
                  "the version check, so S38's own text (a 1.7 daemon's) is not reproduced here", envs)
