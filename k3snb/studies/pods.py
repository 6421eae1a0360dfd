"""Notebook 32: do pods run in gVisor? Verdicts on Exp 32, C1 and the gvisor-matrix addendum 2 claims.

Evidence is the rows of :func:`k3snb.pods.study.attempt` — one per (runsc build × runtime × CNI ×
workarounds allowed), each with the stages a pod passed (``sandbox`` … ``reach``), the first failing stage
and its signature. Every function is pure (rows in, :class:`Verdict` out) and names the rows it used as
evidence keys ``<env>/<runtime>/<cni>[/<variant>].<field>``. What ran: Debian's containerd, runc or crun
(reasons name the versions the rows recorded — fields ``containerd``, ``runtime_version``, read inside the
runner — or say "version not recorded"), CNI plugins and busybox/pause images built offline — not k3s, not
the research's patched binaries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..experiments._record import Verdict
from ._core import judged, not_testable, version_text, versions_text

Row = Mapping[str, Any]

CLAIM_EXP32 = "Exp 32"
CLAIM_C1 = "C1"
CLAIM_SHARED_PID = "gvisor-matrix addendum 2: shared PID namespace"
CLAIM_BRIDGE = "gvisor-matrix addendum 2: CNI bridge"
CLAIM_PTP = "gvisor-matrix addendum 2: CNI ptp"
CLAIM_ETH0 = "gvisor-matrix addendum 2: eth0 address"
CLAIMS = (CLAIM_EXP32, CLAIM_C1, CLAIM_SHARED_PID, CLAIM_BRIDGE, CLAIM_PTP, CLAIM_ETH0)
FULL = ("sandbox", "running", "logs", "exec", "reach")


def key(r: Row) -> str:
    k = f"{r['env']}/{r['runtime']}/{r['cni']}"
    return k + (f"/{r['label']}" if r.get("label") else "")


def _gvisor(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if str(r.get("env", "")).startswith("gvisor")]


def _kit_default(rows: Sequence[Row]) -> list[Row]:
    """Rows run the kit's way (all its workarounds allowed, no research variant)."""
    return [r for r in _gvisor(rows) if not r.get("label")]


def _summary(r: Row) -> str:
    if r.get("failed_stage"):
        sig = f" ({r['signature']})" if r.get("signature") else ""
        return f"{key(r)} stops at {r['failed_stage']}{sig}"
    return f"{key(r)} passes {', '.join(s for s in FULL if s in r['passed'])}"


def _what_ran(rows: Sequence[Row]) -> str:
    """``containerd 1.6.20~ds1 + runc 1.1.5+ds1 / crun 1.8.1``: the versions these rows recorded."""
    rts = sorted({str(r["runtime"]) for r in rows})
    return f"{versions_text(rows, 'containerd')} + " + " / ".join(
        versions_text([r for r in rows if r["runtime"] == rt], rt) for rt in rts)


def _evidence(rows: Sequence[Row], *fields: str) -> dict[str, Any]:
    return {f"{key(r)}.{f}": r.get(f) for r in rows for f in fields}


def judge_exp32(rows: Sequence[Row]) -> Verdict:
    """Exp 32: a pod reaches Running in gVisor. Reproduced when any gVisor build's pod reaches
    CONTAINER_RUNNING the kit's way; refuted when every gVisor row stops before; else not-testable."""
    gv = _kit_default(rows)
    if not gv:
        return not_testable(CLAIM_EXP32, "no gVisor pod attempt ran (needs root and runsc)")
    ran = [r for r in gv if "running" in r["passed"]]
    ev = _evidence(gv, "furthest", "failed_stage", "signature", "workarounds", "containerd", "runtime_version")
    scope = (f"stock {_what_ran(gv)}, a busybox pod from images built offline, not k3s and not the "
             "research's patched binaries")
    if ran:
        envs = sorted({r["env"] for r in ran})
        stopped = [r for r in gv if r not in ran]
        tail = f"; elsewhere: {'; '.join(_summary(r) for r in stopped)}" if stopped else ""
        wk = sorted({w for r in ran for w in r.get("workarounds", [])})
        return judged(CLAIM_EXP32, "reproduced", ev,
                      f"a pod reached CONTAINER_RUNNING in {', '.join(envs)} ({scope}; kit workarounds: "
                      f"{', '.join(wk) or 'none'}){tail}", envs)
    return judged(CLAIM_EXP32, "refuted", ev,
                  f"no gVisor pod reached CONTAINER_RUNNING ({scope}): {'; '.join(_summary(r) for r in gv)}", _envs(gv))


def judge_c1(rows: Sequence[Row]) -> Verdict:
    """C1 "pods run in gVisor" vs "pod execution blocked": reproduced (the "run" side) when some build
    passes every step a pod needs (sandbox, running, logs, exec, reach by pod IP); refuted when none
    reaches running; inconclusive when pods run but some step fails everywhere."""
    gv = _kit_default(rows)
    if not gv:
        return not_testable(CLAIM_C1, "no gVisor pod attempt ran (needs root and runsc)")
    ev = _evidence(gv, "passed", "failed_stage", "signature", "containerd", "runtime_version")
    full = [r for r in gv if all(s in r["passed"] for s in FULL)]
    blocked = [r for r in gv if "running" not in r["passed"]]
    others = f"; blocked: {'; '.join(_summary(r) for r in blocked)}" if blocked else ""
    if full:
        return judged(CLAIM_C1, "reproduced", ev,
                      f"pods run in {', '.join(sorted({r['env'] for r in full}))} ({_what_ran(full)}): "
                      f"{', '.join(key(r) for r in full)} "
                      f"pass sandbox, running, CRI logs, ExecSync and pod-to-pod HTTP — with the kit's workarounds; "
                      f"'blocked' holds only where listed{others}", _envs(full))
    if len(blocked) == len(gv):
        return judged(CLAIM_C1, "refuted", ev, f"the README's 'blocked' holds: {'; '.join(_summary(r) for r in gv)}",
                      _envs(gv))
    return judged(CLAIM_C1, "inconclusive", ev,
                  f"pods reach running but no configuration passes every step: {'; '.join(_summary(r) for r in gv)}",
                  _envs(gv))


def judge_shared_pid(rows: Sequence[Row]) -> Verdict:
    """Addendum 2: in runsc 2024 a container sharing the pod's PID namespace dies in nsexec (setns EINVAL),
    one with its own PID namespace runs and its log is read back. Needs two rows without the pid-node
    workaround: ``share_pid`` True and False (labels ``shared-pid``, ``own-pid``)."""
    gv = [r for r in _gvisor(rows) if r["env"] == "gvisor-2024" and "pid-node" not in r["workarounds_allowed"]]
    shared = [r for r in gv if r.get("share_pid")]
    own = [r for r in gv if not r.get("share_pid")]
    if not shared or not own:
        return not_testable(CLAIM_SHARED_PID, "needs gvisor-2024 rows with and without shareProcessNamespace "
                                              "run without the pid-node workaround")
    s, o = shared[0], own[0]
    ev = _evidence([s, o], "passed", "failed_stage", "signature", "runtime_version")
    at = ["gvisor-2024"]  # the claim is about runsc 2024
    if "running" in s["passed"]:
        return judged(CLAIM_SHARED_PID, "refuted", ev, f"the shared-PID pod ran: {_summary(s)}", at)
    if not ("running" in o["passed"] and "logs" in o["passed"]):
        return judged(CLAIM_SHARED_PID, "refuted", ev,
                      f"the own-PID pod did not run with its log read back: {_summary(o)}", at)
    if s.get("signature") in ("N01", "N03"):
        extra = (f"; ExecSync into the own-PID container also fails ({o['signature']}): setns(CLONE_NEWPID) is refused "
                 "even into the caller's own PID namespace" if o.get("failed_stage") == "exec" else "")
        return judged(CLAIM_SHARED_PID, "reproduced", ev,
                      f"{_summary(s)} ({version_text(s, str(s['runtime']))} nsexec: setns into the pid namespace "
                      "= EINVAL); the own-PID pod runs "
                      f"and its CRI log is read back{extra}", at)
    return judged(CLAIM_SHARED_PID, "inconclusive", ev,
                  f"the shared-PID pod failed, but not with the setns signature: {_summary(s)}", at)


def _judge_plugin(claim: str, rows: Sequence[Row], cni: str, signature: str, what: str) -> Verdict:
    gv = [r for r in _gvisor(rows) if r["env"] == "gvisor-2024" and r["cni"] == cni
          and "cni-link" not in r.get("workarounds", [])]
    if not gv:
        return not_testable(claim, f"needs a gvisor-2024 row with the stock {cni} network")
    r = gv[0]
    ev = _evidence([r], "failed_stage", "signature", "refusing")
    at = [r["env"]]
    if "sandbox" in r["passed"]:
        return judged(claim, "refuted", ev, f"the {cni} network set up a pod: {_summary(r)}", at)
    if r.get("failed_stage") == "sandbox" and r.get("signature") == signature:
        cause = f"; refusing operation: {r['refusing']}" if r.get("refusing") else ""
        return judged(claim, "reproduced", ev, f"{_summary(r)}: {what}{cause}", at)
    return judged(claim, "inconclusive", ev, f"{_summary(r)}, not the claimed failure ({signature})", at)


def judge_bridge(rows: Sequence[Row]) -> Verdict:
    return _judge_plugin(CLAIM_BRIDGE, rows, "bridge", "S29", "'already exists but is not a bridge'")


def judge_ptp(rows: Sequence[Row]) -> Verdict:
    return _judge_plugin(CLAIM_PTP, rows, "ptp", "N04", "'failed to delete route … operation not supported'")


def judge_eth0(rows: Sequence[Row]) -> Verdict:
    return _judge_plugin(CLAIM_ETH0, rows, "loopback", "N05", "'failed to find network info for sandbox'")


def verdicts(rows: Sequence[Row]) -> list[Verdict]:
    """Every claim of notebook 32, judged from the rows."""
    return [judge_exp32(rows), judge_c1(rows), judge_shared_pid(rows), judge_bridge(rows), judge_ptp(rows),
            judge_eth0(rows)]


# -- notebooks 20 and 23: link operations and CNI plugins inside the sandbox's network namespace ----------
CLAIM_EXP20 = "Exp 20"
CLAIM_LINKS = "gvisor-matrix addendum 2: links"
CLAIM_EXP23 = "Exp 23"
LINK_OPS = ("bridge_add", "netns_add", "veth_add", "veth_to_netns", "veth_master", "addr_in_netns", "route_add")


def _steps(rows: Sequence[Row], env: str) -> dict[str, Row]:
    return {r["step"]: r for r in rows if r.get("env") == env}


def _envs(rows: Sequence[Row]) -> list[str]:
    return sorted({r["env"] for r in rows if str(r.get("env", "")).startswith("gvisor")})


def judge_exp20(link_rows: Sequence[Row]) -> Verdict:
    """Exp 20 / §1.5: bridge, veth, netns, move, master, address and default route can be made by hand.
    Reproduced when every one succeeds in some gVisor build; refuted when no build manages them all."""
    envs = _envs(link_rows)
    if not envs:
        return not_testable(CLAIM_EXP20, "no gVisor build ran the link steps (needs root and runsc)")
    ev = {f"{e}.{s}": _steps(link_rows, e).get(s, {}).get("ok") for e in envs for s in (*LINK_OPS, "http_over_bridge")}
    ok = [e for e in envs if all(_steps(link_rows, e).get(s, {}).get("ok") for s in LINK_OPS)]
    failed = {e: [s for s in LINK_OPS if not _steps(link_rows, e).get(s, {}).get("ok")] for e in envs if e not in ok}
    rest = "; ".join(f"{e} fails {', '.join(f)}" for e, f in failed.items())
    if ok:
        traffic = {e: _steps(link_rows, e).get("http_over_bridge", {}).get("ok") for e in ok}
        t = ", ".join(f"{e}: {'HTTP between two netns over the bridge works' if v else 'no HTTP over the bridge'}"
                      for e, v in traffic.items())
        return judged(CLAIM_EXP20, "reproduced", ev,
                      f"every manual step succeeds in {', '.join(ok)} ({t}; the research never tested traffic)"
                      + (f"; {rest}" if rest else ""))
    return judged(CLAIM_EXP20, "refuted", ev, f"no build makes them all: {rest}")


def judge_links(link_rows: Sequence[Row]) -> Verdict:
    """Addendum 2: in runsc 2024 veth, bridge and netns creation succeed; in 2022 all three fail."""
    want = ("veth_add", "bridge_add", "netns_add")
    s22, s24 = _steps(link_rows, "gvisor-2022"), _steps(link_rows, "gvisor-2024")
    if not s22 or not s24:
        return not_testable(CLAIM_LINKS, "needs both runsc builds (2022 and 2024)")
    ev = {f"{e}.{s}": st.get(s, {}).get("ok") for e, st in (("gvisor-2022", s22), ("gvisor-2024", s24)) for s in want}
    ok24 = all(s24.get(s, {}).get("ok") for s in want)
    fail22 = not any(s22.get(s, {}).get("ok") for s in want)
    if ok24 and fail22:
        why = "; ".join(f"{s}: {s22[s]['output'][:80]}" for s in want if s in s22)
        return judged(CLAIM_LINKS, "reproduced", ev, f"2024 makes veth, bridge and netns; 2022 refuses all three ({why})")
    if ok24 or fail22:
        return judged(CLAIM_LINKS, "inconclusive", ev, f"only one half holds: 2024 all ok = {ok24}, 2022 all fail = {fail22}")
    return judged(CLAIM_LINKS, "refuted", ev, "2024 fails a step and 2022 passes one")


def judge_exp23(pod_rows: Sequence[Row]) -> Verdict:
    """Exp 23: a CNI that does no kernel networking gets pods past sandbox network setup (the kit's fake plugin
    stands in for the research's no-op one)."""
    fake = [r for r in _gvisor(pod_rows) if r["cni"] == "fake"]
    if not fake:
        return not_testable(CLAIM_EXP23, "no gVisor pod ran with the fake CNI plugin")
    ev = _evidence(fake, "passed", "failed_stage", "signature")
    past = [r for r in fake if "sandbox" in r["passed"]]
    if past:
        nxt = "; ".join(_summary(r) for r in past)
        return judged(CLAIM_EXP23, "reproduced", ev,
                      f"with the kit's fake plugin (addresses, no interface) the sandbox's network setup passes: {nxt} "
                      "(the research's next error, cap_last_cap, does not occur where runc runs)")
    if any(r.get("failed_stage") == "sandbox" for r in fake):
        return judged(CLAIM_EXP23, "refuted", ev, "; ".join(_summary(r) for r in fake))
    return judged(CLAIM_EXP23, "inconclusive", ev,
                  f"no fake-CNI pod reached network setup: {'; '.join(_summary(r) for r in fake)}")


def _cni_plugin_claim(claim: str, cni_rows: Sequence[Row], step: str, needle: str) -> Verdict:
    rows = [r for r in cni_rows if r["step"] == step and str(r.get("env", "")).startswith("gvisor")]
    if not rows:
        return not_testable(claim, f"no gVisor build ran the {step} plugin call")
    ev = {f"{r['env']}.{step}.ok": r["ok"] for r in rows} | {f"{r['env']}.{step}.error": r["output"][:160]
                                                               for r in rows if not r["ok"]}
    hit = [r for r in rows if not r["ok"] and needle in r["output"]]
    if hit:
        other = [r for r in rows if r not in hit]
        tail = "; ".join(f"{r['env']}: {'passes' if r['ok'] else r['output'][:90]}" for r in other)
        return judged(claim, "reproduced", ev, f"{', '.join(r['env'] for r in hit)}: '{hit[0]['output'][:140]}'"
                      + (f"; {tail}" if tail else ""))
    if any(r["ok"] for r in rows):
        return judged(claim, "refuted", ev, "; ".join(f"{r['env']}: {'passes' if r['ok'] else r['output'][:120]}"
                                                      for r in rows))
    return judged(claim, "inconclusive", ev, "fails differently: " + "; ".join(f"{r['env']}: {r['output'][:120]}"
                                                                                for r in rows))


def judge_s28(cni_rows: Sequence[Row]) -> Verdict:
    return _cni_plugin_claim("S28", cni_rows, "bridge_promisc", "could not set promiscuous mode")


def judge_s29(cni_rows: Sequence[Row]) -> Verdict:
    return _cni_plugin_claim("S29", cni_rows, "bridge", "already exists but is not a bridge")


def judge_s30(cni_rows: Sequence[Row]) -> Verdict:
    """S30: ptp fails *adding* a route. Where ptp fails deleting one instead (N04) the claim is refuted for that
    build: the refused request is RTM_DELROUTE, not an add."""
    rows = [r for r in cni_rows if r["step"] == "ptp" and str(r.get("env", "")).startswith("gvisor")]
    if rows and not any("failed to add route" in r["output"] for r in rows):
        deletes = [r for r in rows if "failed to delete route" in r["output"]]
        if deletes:
            ev = {f"{r['env']}.ptp.error": r["output"][:160] for r in rows}
            others = "; ".join(f"{r['env']}: {r['output'][:90]}" for r in rows if r not in deletes)
            return judged("S30", "refuted", ev,
                          f"{', '.join(r['env'] for r in deletes)}: ptp fails *deleting* the subnet route "
                          "(RTM_DELROUTE = EOPNOTSUPP, N04); adding routes works" + (f"; {others}" if others else ""))
    return _cni_plugin_claim("S30", cni_rows, "ptp", "failed to add route")


# -- notebook 19: podman inside the sandbox --------------------------------------------------------------
S26_TEXTS = ("netavark: invalid version number", "unmounting storage", "unsupported value: NaN")


def _podman(rows: Sequence[Row]) -> dict[str, dict[str, Row]]:
    out: dict[str, dict[str, Row]] = {}
    for r in rows:
        if str(r.get("env", "")).startswith("gvisor"):
            out.setdefault(r["env"], {})[r["step"]] = r
    return out


def judge_exp19(podman_rows: Sequence[Row]) -> Verdict:
    """Exp 19 (docker there; podman here): containers run with --network host and none, bridge networks fail.
    Reproduced for a build where exactly that holds; refuted where a bridge network works or host/none fail
    after the image loaded; inconclusive when no build got an image loaded."""
    by = _podman(podman_rows)
    if not by:
        return not_testable("Exp 19", "podman did not run in any gVisor build (needs root, runsc, podman)")
    ev = {f"{e}.{s}": st.get(s, {}).get("ok") for e, st in by.items() for s in ("load", "run_none", "run_host",
                                                                                 "run_bridge")}
    ran = {e: st for e, st in by.items() if st.get("load", {}).get("ok")}
    if not ran:
        return judged("Exp 19", "inconclusive", ev, "no build loaded an image: " + "; ".join(
            f"{e}: {st.get('load', {}).get('output', '')[:100]}" for e, st in by.items()))
    def none_ok(st: dict[str, Row]) -> bool:
        return st["run_none"]["ok"] or st.get("run_none_nosysctl", {}).get("ok", False)

    match = [e for e, st in ran.items() if none_ok(st) and st["run_host"]["ok"] and not st["run_bridge"]["ok"]]
    if match:
        why = "; ".join(f"{e} bridge: {ran[e]['run_bridge']['output'][:120]}" for e in match)
        note = "; network none needs podman's default sysctls off (N06)" if any(
            not ran[e]["run_none"]["ok"] for e in match) else ""
        return judged("Exp 19", "reproduced", ev, f"podman (not docker: not installed here) with runc: network none "
                      f"and host run, the default bridge network fails — {why}{note}")
    return judged("Exp 19", "refuted", ev, "; ".join(
        f"{e}: none={none_ok(st)}, host={st['run_host']['ok']}, bridge={st['run_bridge']['ok']}"
        for e, st in ran.items()))


def judge_s26(podman_rows: Sequence[Row]) -> Verdict:
    """S26: podman's own failures in gVisor (netavark version, storage unmount, NaN in `podman info`)."""
    by = _podman(podman_rows)
    if not by:
        return not_testable("S26", "podman did not run in any gVisor build")
    ev = {f"{e}.{s}.ok": r["ok"] for e, st in by.items() for s, r in st.items() if s != "netlink_subscribe"}
    hits = [f"{e}.{s}" for e, st in by.items() for s, r in st.items() if any(t in r["output"] for t in S26_TEXTS)]
    if hits:
        return judged("S26", "reproduced", ev, f"S26 texts in {', '.join(hits)}")
    by = {e: {s: r for s, r in st.items() if s != "netlink_subscribe"} for e, st in by.items()}
    clean = [e for e, st in by.items() if st.get("info", {}).get("ok")
             and any(st.get(s, {}).get("ok") for s in ("run_none", "run_none_nosysctl", "run_host"))]
    if clean:
        return judged("S26", "refuted", ev, f"podman 4.3 (CNI backend, vfs, runc) in {', '.join(clean)}: `podman info` "
                      "and `podman run` work and none of S26's texts appear; netavark is not used by this podman")
    return judged("S26", "inconclusive", ev, "podman failed, but not with S26's texts: " + "; ".join(
        f"{e}: {next((r['output'][:100] for r in st.values() if not r['ok']), '')}" for e, st in by.items()))


def judge_s24(podman_rows: Sequence[Row]) -> Verdict:
    """S24's cause, measured directly: may a process subscribe to netlink link updates (bind RTMGRP_LINK)?
    dockerd's 'failed to subscribe to link updates: permission denied' says no."""
    rows = [r for r in podman_rows if r["step"] == "netlink_subscribe" and str(r.get("env", "")).startswith("gvisor")]
    if not rows:
        return not_testable("S24", "the netlink subscription step did not run in gVisor")
    ev = {f"{r['env']}.netlink_subscribe.ok": r["ok"] for r in rows} | {
        f"{r['env']}.netlink_subscribe.error": r["output"][-120:] for r in rows if not r["ok"]}
    denied = [r for r in rows if not r["ok"] and "ermission denied" in r["output"]]
    if denied:
        return judged("S24", "reproduced", ev, f"bind(AF_NETLINK, groups=RTMGRP_LINK) is denied in "
                      f"{', '.join(r['env'] for r in denied)} (dockerd itself is not installed here)")
    if all(r["ok"] for r in rows):
        return judged("S24", "refuted", ev, f"bind(AF_NETLINK, groups=RTMGRP_LINK) succeeds in "
                      f"{', '.join(r['env'] for r in rows)}; dockerd itself is not installed here")
    return judged("S24", "inconclusive", ev, "; ".join(f"{r['env']}: {r['output'][-100:]}" for r in rows))
