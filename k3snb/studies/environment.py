"""Notebook 00: the research's environment claims, judged from recorded probes (``k3snb.probe``).

Each check looks only at facts a probe recorded. A claim about gVisor is judged from the gVisor probes
alone (the host is context, never evidence); a claim about one runsc build only from that build's probes.
No probe of the build -> ``not-testable``; builds disagreeing -> ``inconclusive`` naming which showed what.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import InvalidParameter
from ..experiments._record import Verdict
from ._core import judged

KUBELET_MISSING = ("kernel/panic", "kernel/panic_on_oops", "vm/panic_on_oom", "kernel/keys/root_maxkeys",
                   "kernel/keys/root_maxbytes")
KUBE_PROXY_KEYS = ("net/ipv4/conf/all/route_localnet", "net/netfilter/nf_conntrack_max",
                   "net/bridge/bridge-nf-call-iptables")


def build_of(p) -> str | None:
    """``"2022"``/``"2024"`` from the probe's runsc version, else None."""
    m = re.search(r"(20\d\d)\d{4}", p.data.get("runsc_version") or "")
    return m.group(1) if m else None


def _ps(p, key: str) -> dict[str, Any]:
    return p.data["proc_sys"].get(key, {"present": None})


def _root_9p(p):
    return p.data["root_fsmagic"] == "0x01021997", {"root_fstype": p.data["root_fstype"],
                                                     "root_fsmagic": p.data["root_fsmagic"]}


def _kernel_440(p):
    return p.data["kernel_release"] == "4.4.0", {"kernel_release": p.data["kernel_release"]}


def _no_kmsg(p):
    return not p.data["dev_kmsg"].get("present"), {"dev_kmsg_present": bool(p.data["dev_kmsg"].get("present"))}


def _cap_last_cap_missing(p):
    rec = _ps(p, "kernel/cap_last_cap")
    return rec.get("present") is False, {"cap_last_cap_present": rec.get("present")}


def _cap_last_cap_present(p):
    rec = _ps(p, "kernel/cap_last_cap")
    return rec.get("present") is True, {"cap_last_cap_present": rec.get("present")}


def _absent(keys):
    def check(p):
        ev = {k: _ps(p, k).get("present") for k in keys}
        return all(v is False for v in ev.values()), {f"present {k}": v for k, v in ev.items()}
    return check


def _identity(p):
    us = p.data.get("userns") or {}
    return us.get("identity_map") is True, {"identity_map": us.get("identity_map")}


def _no_cgroup_ns(p):
    v = (p.data.get("cgroup") or {}).get("ns_cgroup")
    return v is False, {"ns_cgroup": v}


def _statx_bug(p):
    v = (p.data.get("statx") or {}).get("at_no_automount")
    return isinstance(v, str) and v.startswith("EINVAL"), {"statx_at_no_automount": v}


def _osrelease_missing(p):
    rec = _ps(p, "kernel/osrelease")
    return not rec.get("readable"), {"osrelease_readable": rec.get("readable")}


def _ptrace_children(p):
    pt = p.data.get("ptrace") or {}
    return pt.get("traceme") == "ok" and pt.get("syscall_stop") == "ok", {
        "traceme": pt.get("traceme"), "syscall_stop": pt.get("syscall_stop")}


def _overcommit_eio(p):
    oc = _ps(p, "vm/overcommit_memory")
    ok = bool(oc.get("present")) and oc.get("writable") is False and "EIO" in str(oc.get("error"))
    return ok, {"present": oc.get("present"), "writable": oc.get("writable"), "error": oc.get("error")}


# claim id -> (runsc build the claim is about, or None for every gVisor build; check probe -> (holds, facts))
CHECKS: dict[str, tuple[str | None, Callable[[Any], tuple[bool, dict[str, Any]]]]] = {
    "§1.2 9p root": (None, _root_9p),
    "§1.1 kernel": (None, _kernel_440),
    "S01": (None, _absent(KUBELET_MISSING)),
    "S02": (None, _overcommit_eio),
    "S06": (None, _no_kmsg),
    "§1.3 kube-proxy sysctls": (None, _absent(KUBE_PROXY_KEYS)),
    "S40": (None, _absent(("net/ipv4/ip_unprivileged_port_start", "net/ipv4/ping_group_range"))),
    "S33": (None, _no_cgroup_ns),
    "§1.3 osrelease": (None, _osrelease_missing),
    "§1.4 ptrace": (None, _ptrace_children),
    "D.3 uid_map": (None, _identity),
    "§1.3 cap_last_cap": ("2022", _cap_last_cap_missing),
    "matrix cap_last_cap 2024": ("2024", _cap_last_cap_present),
    "matrix statx": ("2022", _statx_bug),
}


def environment_claim(claim_id: str, probes: Mapping[str, Any] | Iterable[Any]) -> Verdict:
    """Judge one environment claim of :data:`CHECKS` from probes (EnvProbe, probe dicts or JSON paths).

    Evidence keys are ``<label>.<fact>`` (e.g. ``gvisor-2022.kernel_release``) for the facts used.

    Raises:
        InvalidParameter: unknown claim id, or no probes at all.
    """
    from ..probing._probe import as_probe

    if claim_id not in CHECKS:
        raise InvalidParameter(f"no environment check for {claim_id!r}; valid: {', '.join(CHECKS)}")
    items = list(probes.values()) if isinstance(probes, Mapping) else list(probes)
    if not items:
        raise InvalidParameter("environment claims need at least one probe",
                               hint="pass k3snb.probing.probe_environments(...)[0]")
    build, fn = CHECKS[claim_id]
    ps = [as_probe(x) for x in items]
    rel = [p for p in ps if p.in_gvisor and (build is None or build_of(p) == build)]
    if not rel:
        what = f"the runsc {build} build" if build else "gVisor"
        return judged(claim_id, "not-testable", {},
                      f"no probe of {what} in this run (probed: {', '.join(p.label for p in ps)}); "
                      f"run with runner gvisor{':' + build if build else ''}")
    evidence: dict[str, Any] = {}
    holds: dict[str, bool] = {}
    for p in rel:
        ok, facts = fn(p)
        holds[p.label] = ok
        evidence.update({f"{p.label}.{k}": v for k, v in facts.items()})
    yes = [lb for lb, v in holds.items() if v]
    no = [lb for lb, v in holds.items() if not v]
    # the gVisor builds judged, read off the probes' runsc versions (labels are free text; the host is context)
    envs = list(dict.fromkeys(f"gvisor-{build_of(p) or 'custom'}" for p in rel))
    if not no:
        return judged(claim_id, "reproduced", evidence, f"holds in {', '.join(yes)}", envs)
    if not yes:
        return judged(claim_id, "refuted", evidence, f"does not hold in {', '.join(no)}", envs)
    return judged(claim_id, "inconclusive", evidence, f"holds in {', '.join(yes)} but not in {', '.join(no)}", envs)


def environment_claims(probes: Mapping[str, Any] | Iterable[Any], ids: Iterable[str] | None = None) -> list[Verdict]:
    """:func:`environment_claim` for each id (default: every check)."""
    return [environment_claim(c, probes) for c in (ids or CHECKS)]
