"""Map probes to the environment claims of the seed research (seed-catalog §1, gvisor-matrix §1).

Each check looks only at facts the probes recorded and returns a :class:`Claim` whose fields are
exactly the arguments of ``k3snb.verdict(claim, status, evidence, reason)``. A claim about gVisor
is ``not-testable`` when no gVisor probe was given; when builds disagree it is ``inconclusive``
and the reason names which build showed what.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from ..errors import InvalidParameter
from ._record import EnvProbe, as_probe

KUBELET_MISSING = ("kernel/panic", "kernel/panic_on_oops", "vm/panic_on_oom", "kernel/keys/root_maxkeys",
                   "kernel/keys/root_maxbytes")
KUBE_PROXY_KEYS = ("net/ipv4/conf/all/route_localnet", "net/netfilter/nf_conntrack_max",
                   "net/bridge/bridge-nf-call-iptables")


class Claim(NamedTuple):
    """One claim judged from probes: the arguments of ``k3snb.verdict``."""

    claim: str
    status: str
    evidence: dict[str, Any]
    reason: str


def build_of(p: EnvProbe) -> str | None:
    """``"2022"``/``"2024"`` from the probe's runsc version, else None."""
    m = re.search(r"(20\d\d)\d{4}", p.data.get("runsc_version") or "")
    return m.group(1) if m else None


def _ps(p: EnvProbe, key: str) -> dict[str, Any]:
    return p.data["proc_sys"].get(key, {"present": None})


# Each check: (claim text, build filter or None, function probe -> (supports: bool, evidence dict)).
def _root_9p(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    return p.data["root_fsmagic"] == "0x01021997", {"root_fstype": p.data["root_fstype"],
                                                     "root_fsmagic": p.data["root_fsmagic"]}


def _kernel_440(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    return p.data["kernel_release"] == "4.4.0", {"kernel_release": p.data["kernel_release"]}


def _no_kmsg(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    return not p.data["dev_kmsg"].get("present"), {"dev_kmsg": p.data["dev_kmsg"]}


def _cap_last_cap_missing(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    rec = _ps(p, "kernel/cap_last_cap")
    return rec.get("present") is False, {"present": rec.get("present"), "value": rec.get("value")}


def _cap_last_cap_present(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    ok, ev = _cap_last_cap_missing(p)
    return not ok and ev["present"] is True, ev


def _kube_proxy(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    ev = {k: _ps(p, k).get("present") for k in KUBE_PROXY_KEYS}
    return all(v is False for v in ev.values()), {f"present {k}": v for k, v in ev.items()}


def _unpriv(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    keys = ("net/ipv4/ip_unprivileged_port_start", "net/ipv4/ping_group_range")
    ev = {k: _ps(p, k).get("present") for k in keys}
    return all(v is False for v in ev.values()), {f"present {k}": v for k, v in ev.items()}


def _identity(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    us = p.data.get("userns") or {}
    return us.get("identity_map") is True, {"uid_map": us.get("uid_map"),
                                            "in_user_namespace": us.get("in_user_namespace")}


def _no_cgroup_ns(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    v = (p.data.get("cgroup") or {}).get("ns_cgroup")
    return v is False, {"ns_cgroup": v}


def _statx_bug(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    v = (p.data.get("statx") or {}).get("at_no_automount")
    return isinstance(v, str) and v.startswith("EINVAL"), {"statx_at_no_automount": v}


def _osrelease_missing(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    rec = _ps(p, "kernel/osrelease")
    return not rec.get("readable"), {"present": rec.get("present"), "readable": rec.get("readable")}


def _ptrace_children(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    pt = p.data.get("ptrace") or {}
    return pt.get("traceme") == "ok" and pt.get("syscall_stop") == "ok", {
        "traceme": pt.get("traceme"), "syscall_stop": pt.get("syscall_stop")}


def _overcommit_eio(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    oc = _ps(p, "vm/overcommit_memory")
    ok = bool(oc.get("present")) and oc.get("writable") is False and "EIO" in str(oc.get("error"))
    return ok, {"present": oc.get("present"), "writable": oc.get("writable"), "method": oc.get("method"),
                "error": oc.get("error")}


def _kubelet_five_missing(p: EnvProbe) -> tuple[bool, dict[str, Any]]:
    ev = {k: _ps(p, k).get("present") for k in KUBELET_MISSING}
    return all(v is False for v in ev.values()), {f"present {k}": v for k, v in ev.items()}


# (claim id: text, runsc build it is about or None for every gVisor build, check)
CHECKS: list[tuple[str, str | None, Callable[[EnvProbe], tuple[bool, dict[str, Any]]]]] = [
    ("seed §1.2: the gVisor root filesystem is 9p (statfs magic 0x01021997)", None, _root_9p),
    ("seed §1.1: gVisor reports kernel 4.4.0", None, _kernel_440),
    ("S01: kubelet tunables kernel/panic, panic_on_oops, vm/panic_on_oom, keys/root_maxkeys, "
     "keys/root_maxbytes are absent in gVisor", None, _kubelet_five_missing),
    ("S02: vm/overcommit_memory exists in gVisor but a write fails with EIO", None, _overcommit_eio),
    ("S06: /dev/kmsg is absent in gVisor", None, _no_kmsg),
    ("seed §1.3: kube-proxy sysctls route_localnet, nf_conntrack_max, bridge-nf-call-iptables are absent "
     "in gVisor", None, _kube_proxy),
    ("S40: ip_unprivileged_port_start and ping_group_range are absent in gVisor", None, _unpriv),
    ("S33: /proc/self/ns/cgroup is absent in gVisor", None, _no_cgroup_ns),
    ("seed §1.3: /proc/sys/kernel/osrelease is not accessible in gVisor", None, _osrelease_missing),
    ("seed §1.4: ptrace of one's own children works in gVisor (PTRACE_TRACEME, syscall stops)", None,
     _ptrace_children),
    ("anchors D.3: gVisor's uid_map is the identity map, so KubeletInUserNamespace alone is inert", None,
     _identity),
    ("seed §1.3: kernel/cap_last_cap is missing (runsc 20221219)", "2022", _cap_last_cap_missing),
    ("matrix addendum: kernel/cap_last_cap is present in runsc 20240729", "2024", _cap_last_cap_present),
    ("matrix §1: statx(AT_NO_AUTOMOUNT) fails with EINVAL in runsc 20221219", "2022", _statx_bug),
]


def check_claims(probes: Iterable[EnvProbe | dict] | Mapping[str, EnvProbe]) -> list[Claim]:
    """Judge the research's environment claims from probes; one :class:`Claim` per check.

    Evidence keys are ``"<label>.<item>"`` so they can be recorded side by side.

    Raises:
        InvalidParameter: no probes given, or an item is not a probe.
    """
    items = list(probes.values()) if isinstance(probes, Mapping) else list(probes)
    if not items:
        raise InvalidParameter("check_claims needs at least one probe", hint="pass [k3snb.probe('gvisor'), ...]")
    ps = [as_probe(x) for x in items]
    gv = [p for p in ps if p.kind == "gvisor"]
    out = []
    for text, build, fn in CHECKS:
        rel = [p for p in gv if build is None or build_of(p) == build]
        if not rel:
            what = f"runsc {build} build" if build else "gVisor"
            out.append(Claim(text, "not-testable", {}, f"no {what} probe in this run"))
            continue
        evidence: dict[str, Any] = {}
        verdicts = {}
        for p in rel:
            ok, ev = fn(p)
            verdicts[p.label] = ok
            evidence.update({f"{p.label}.{k}": v for k, v in ev.items()})
        if all(verdicts.values()):
            status, reason = "reproduced", f"observed in {', '.join(verdicts)}"
        elif not any(verdicts.values()):
            status, reason = "refuted", f"not observed in {', '.join(verdicts)}"
        else:
            yes = [lb for lb, v in verdicts.items() if v]
            no = [lb for lb, v in verdicts.items() if not v]
            status, reason = "inconclusive", f"holds in {', '.join(yes)} but not in {', '.join(no)}"
        out.append(Claim(text, status, evidence, reason))
    return out
