"""Notebooks 01, 02, 05, 12, 13, 15, 16: verdicts on the k3s claims from recorded runs.

Evidence is what ``k3snb.k3s.notebook.run_profile`` returns and the notebook records as ``run`` (readiness
stages, classifier signature ids of the k3s log, ``alive_at_end``, ``observed_s``, ``objects``) plus ``k3s``
(the binary's status). The research's quoted log lines are context, never evidence: no function here reads
them. Without a k3s binary every claim is ``not-testable`` with the reason and the fix. Every other reason
starts with what ran where, as the run recorded it: k3s's version, the runner, its runsc build and platform.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..experiments._record import Verdict
from ._core import judged

Run = Mapping[str, Any] | None
SIX_BLOCKERS = ("S01", "S02", "S03", "S06", "S15", "S17")


def has_signature(ids: list[str], sig: str) -> bool:
    """``sig`` or one of its lettered variants (S03 matches S03b, not S031)."""
    return any(i == sig or (i.startswith(sig) and not i[len(sig):].isdigit()) for i in ids)


def _absent(claim: str, k3s: Mapping[str, Any], run: Run) -> Verdict | None:
    if run is None or not k3s.get("available"):
        what = "k3s did not run" if k3s.get("available") else "no k3s binary here"
        return judged(claim, "not-testable", {}, f"{what}; set K3SNB_K3S=/path/to/k3s or run "
                                                 "`k3snb k3s install VERSION`, then re-run")
    return None


def _stages(run: Mapping[str, Any]) -> dict[str, bool]:
    return {s["stage"]: bool(s["reached"]) for s in run["readiness"]["stages"]}


def _secs(run: Mapping[str, Any], stage: str) -> Any:
    return next((s["seconds"] for s in run["readiness"]["stages"] if s["stage"] == stage), None)


def _reached(run: Mapping[str, Any]) -> str:
    return str(run["readiness"]["summary"].get("reached"))


def _env(run: Mapping[str, Any]) -> dict[str, Any]:
    """What ran where, as the run recorded it: the runner's label, its runsc build and platform, k3s's version."""
    info = run.get("info") or {}
    runner = info.get("runner") or {}
    return {"runner": run.get("runner"), "runsc_version": runner.get("runsc_version"),
            "platform": runner.get("platform"), "k3s": (info.get("k3s") or {}).get("version")}


def _where(k3s: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    """``k3s v1.33.5+k3s1 in gvisor-2024 (runsc 0.0~20240729.0, systrap)``; a part the run did not record is
    said to be missing (the k3s version falls back to the binary's status, which names the same file)."""
    e = _env(run)
    build = ", ".join(x for x in (e["runsc_version"] and f"runsc {e['runsc_version']}", e["platform"]) if x)
    k3s_ver = e["k3s"] or k3s.get("version")
    return (f"k3s {k3s_ver or '(version not recorded)'} in {e['runner'] or 'a runner not recorded'}"
            + (f" ({build})" if build else ""))


def _ev(run: Mapping[str, Any], key: str = "run") -> dict[str, Any]:
    keep = ("profile", "runner", "readiness", "signatures", "furthest_stage", "alive_at_end", "observed_s", "objects",
            "manifests")
    return {key: {**{k: run[k] for k in keep if k in run}, "environment": _env(run)}}


def _judged(k3s: Mapping[str, Any], run: Mapping[str, Any], claim: str, status: str, reason: str,
            evidence: Mapping[str, Any] | None = None) -> Verdict:
    """A verdict on ``run`` (evidence: :func:`_ev` of it unless given) whose reason starts with what ran
    where (checklist 7: scope in the reason)."""
    return judged(claim, status, _ev(run) if evidence is None else evidence, f"{_where(k3s, run)}: {reason}")


def signature_seen(claim: str, sig: str, k3s: Mapping[str, Any], run: Run, *, profile: str = "") -> Verdict:
    """A failure signature the claim says appears: reproduced when the k3s log has it; refuted when k3s got
    past the point where it would stop (readyz) without it; inconclusive when k3s ended earlier without it."""
    if (v := _absent(claim, k3s, run)) is not None:
        return v
    ids = run.get("signatures", [])
    if has_signature(ids, sig):
        return _judged(k3s, run, claim, "reproduced",
                       f"{sig} in the k3s log of profile {profile or run.get('profile')}")
    if _stages(run).get("readyz"):
        return _judged(k3s, run, claim, "refuted", f"k3s reached readyz without {sig} (signatures: {ids})")
    return _judged(k3s, run, claim, "inconclusive", f"{sig} not seen, but k3s stopped at {_reached(run)} ({ids})")


def signature_cleared(claim: str, sig: str, k3s: Mapping[str, Any], run: Run, *, by: str) -> Verdict:
    """A signature the claim says a workaround (``by``) clears: reproduced when the run with it reached readyz
    without the signature; refuted when the signature still appears; inconclusive when k3s stopped earlier."""
    if (v := _absent(claim, k3s, run)) is not None:
        return v
    ids = run.get("signatures", [])
    if has_signature(ids, sig):
        return _judged(k3s, run, claim, "refuted", f"{sig} still in the log with {by}")
    if _stages(run).get("readyz"):
        return _judged(k3s, run, claim, "reproduced", f"with {by}, k3s reached {_reached(run)} without {sig}")
    return _judged(k3s, run, claim, "inconclusive", f"{sig} not seen, but k3s stopped at {_reached(run)} ({ids})")


def api_ready(claim: str, k3s: Mapping[str, Any], run: Run, *, what: str) -> Verdict:
    """reproduced when /readyz answered (with the stage time); refuted when it did not within the timeout."""
    if (v := _absent(claim, k3s, run)) is not None:
        return v
    if _stages(run).get("readyz"):
        return _judged(k3s, run, claim, "reproduced", f"{what}: readyz reached after {_secs(run, 'readyz')} s")
    hang = " with the S11 hang" if has_signature(run.get("signatures", []), "S11") else ""
    return _judged(k3s, run, claim, "refuted", f"{what}: readyz not reached{hang}; furthest stage "
                                               f"{_reached(run)}, signatures {run.get('signatures', [])}")


def disable_agent_hang(k3s: Mapping[str, Any], run: Run) -> Verdict:
    """C6 from the `--disable-agent`-only run: reproduced when it hung with S11 and no readyz; refuted when
    readyz was reached; inconclusive when it failed otherwise."""
    if (v := _absent("C6", k3s, run)) is not None:
        return v
    ids = run.get("signatures", [])
    if _stages(run).get("readyz"):
        return _judged(k3s, run, "C6", "refuted", "`--disable-agent` alone reached readyz: no hang")
    if has_signature(ids, "S11"):
        return _judged(k3s, run, "C6", "reproduced", "`--disable-agent` alone: S11 and no readyz")
    return _judged(k3s, run, "C6", "inconclusive",
                   f"no readyz, but no S11 either (reached {_reached(run)}, {ids})")


def native_worker(k3s: Mapping[str, Any], run: Run) -> Verdict:
    """Exp 02: reproduced when the worker ends at S03; refuted when the node became Ready; else inconclusive."""
    if (v := _absent("Exp 02", k3s, run)) is not None:
        return v
    ids = run.get("signatures", [])
    if _stages(run).get("node-ready"):
        return _judged(k3s, run, "Exp 02", "refuted", "the node became Ready")
    if has_signature(ids, "S03"):
        return _judged(k3s, run, "Exp 02", "reproduced", f"the worker stopped at S03 (all signatures {ids})")
    return _judged(k3s, run, "Exp 02", "inconclusive", f"S03 not seen; reached {_reached(run)}; signatures {ids}")


def local_storage_flag(k3s: Mapping[str, Any], run: Run, without: Run) -> list[Verdict]:
    """Exp 12, C13 and S03 from two runs, with (``run``) and without (``run_without_flag``) the flag.

    Exp 12 reproduced: S03 only without the flag; refuted: S03 with the flag; inconclusive: S03 in neither.
    C13 ("the knob failed") is the opposite reading of the same runs. S03 from the run without the flag.
    """
    out = []
    for c in ("Exp 12", "C13"):
        if (v := _absent(c, k3s, run if without is not None else None)) is not None:
            out.append(v)
            continue
        ev = {**_ev(run), **_ev(without, "run_without_flag")}
        w, wo = (has_signature(x.get("signatures", []), "S03") for x in (run, without))
        if w:
            s, why = ("refuted", "reproduced")[c == "C13"], "S03 is still there with the flag"
        elif wo:
            s, why = ("reproduced", "refuted")[c == "C13"], f"S03 only without the flag; next: {run.get('signatures')}"
        else:
            s, why = "inconclusive", "S03 in neither run, so the flag had nothing to remove"
        out.append(_judged(k3s, run, c, s, why, ev))
    out.append(signature_seen("S03", "S03", k3s, without, profile="local-storage without the flag"))
    return out


def ultimate(k3s: Mapping[str, Any], run: Run) -> Verdict:
    """Exp 13: reproduced when none of the six blockers is in the log and k3s got to readyz; refuted when one
    is; inconclusive when k3s stopped before readyz with none of them."""
    if (v := _absent("Exp 13", k3s, run)) is not None:
        return v
    ids = run.get("signatures", [])
    left = [b for b in SIX_BLOCKERS if has_signature(ids, b)]
    if left:
        return _judged(k3s, run, "Exp 13", "refuted", f"still present: {left}")
    if _stages(run).get("readyz"):
        return _judged(k3s, run, "Exp 13", "reproduced", f"none of the six; reached {_reached(run)}; other: {ids}")
    return _judged(k3s, run, "Exp 13", "inconclusive", f"none of the six, but k3s stopped at {_reached(run)}")


def hook_fatal(k3s: Mapping[str, Any], run: Run) -> Verdict:
    """C10 ("the S18 post-start-hook failure kills k3s ~20 s in"): reproduced when S18 appeared and k3s was
    dead at the end; refuted when S18 appeared and k3s stayed alive; inconclusive when S18 never appeared."""
    if (v := _absent("C10", k3s, run)) is not None:
        return v
    ids = run.get("signatures", [])
    if not has_signature(ids, "S18"):
        return _judged(k3s, run, "C10", "inconclusive",
                       "the post-start-hook failure (S18) did not occur in this run")
    if run.get("alive_at_end"):
        return _judged(k3s, run, "C10", "refuted",
                       f"S18 occurred and k3s was still alive after {run.get('observed_s')} s")
    return _judged(k3s, run, "C10", "reproduced", "S18 occurred and k3s was dead at the end of the run")


def stays_up(claim: str, k3s: Mapping[str, Any], run: Run, *, claimed_s: float) -> Verdict:
    """Exp 15 (claimed_s=300: 10 × 30 s) and C9 (claimed_s=900: "15+ minutes"): reproduced when k3s was alive
    with the node registered after at least ``claimed_s`` s of observation; refuted when it died during the
    observation; inconclusive when the observation was shorter than the claim (the reason says how long)."""
    if (v := _absent(claim, k3s, run)) is not None:
        return v
    seen = float(run.get("observed_s") or 0)
    st = _stages(run)
    if not run.get("alive_at_end") or not st.get("node-registered"):
        return _judged(k3s, run, claim, "refuted", f"alive at end: {run.get('alive_at_end')}, node registered: "
                                                   f"{st.get('node-registered')} after {seen:.0f} s observed")
    if seen < claimed_s:
        return _judged(k3s, run, claim, "inconclusive", f"alive with the node registered, but observed only "
                                                        f"{seen:.0f} s of the {claimed_s:.0f} s claimed")
    state = "Ready" if st.get("node-ready") else "NotReady"
    return _judged(k3s, run, claim, "reproduced",
                   f"alive after {seen:.0f} s (claimed {claimed_s:.0f} s), node {state}")


def _pods(run: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [tuple(p) for p in (run.get("objects") or {}).get("pods", [])]


def manifests_and_pods(k3s: Mapping[str, Any], run: Run) -> list[Verdict]:
    """Exp 16, C1, C2, S20 from a worker run that applied the example manifests and listed the pods.

    Exp 16 ("manifests install, pods stay Pending/fail"): reproduced when every object was created and no pod
    runs; refuted when a pod runs or an object failed; inconclusive when the API never got ready.
    C1 ("pods run"): reproduced when a pod is Running; refuted when pods exist and none runs; inconclusive
    without pods. C2 ("the pod blocker is runc init"): reproduced when S31 is in the log; refuted when a pod
    runs; inconclusive otherwise. S20: reproduced when in the log; refuted when a pod runs; else inconclusive.
    """
    claims = ("Exp 16", "C1", "C2", "S20")
    if run is None or not k3s.get("available"):
        return [_absent(c, k3s, None) for c in claims]  # type: ignore[misc]
    ids = run.get("signatures", [])
    rows = run.get("manifests") or []
    pods = _pods(run)
    running = [n for n, ph in pods if ph == "Running"]
    phases = sorted({ph for _, ph in pods})
    out = []
    if not _stages(run).get("readyz"):
        out.append(_judged(k3s, run, "Exp 16", "inconclusive",
                           f"the API never became ready (reached {_reached(run)})"))
    elif running or not rows or not all(r.get("created") for r in rows):
        made = sum(bool(r.get("created")) for r in rows)
        out.append(_judged(k3s, run, "Exp 16", "refuted",
                           f"objects created: {made}/{len(rows)}; running pods: {len(running)}"))
    else:
        out.append(_judged(k3s, run, "Exp 16", "reproduced", f"{len(rows)} objects created; pod phases {phases}"))
    if running:
        out.append(_judged(k3s, run, "C1", "reproduced", f"{len(running)} of {len(pods)} pods Running"))
    elif pods:
        out.append(_judged(k3s, run, "C1", "refuted", f"{len(pods)} pods, none Running (phases {phases})"))
    else:
        out.append(_judged(k3s, run, "C1", "inconclusive", "no pods were created"))
    for c, sig in (("C2", "S31"), ("S20", "S20")):
        if has_signature(ids, sig):
            out.append(_judged(k3s, run, c, "reproduced", f"{sig} in the k3s log"))
        elif running:
            out.append(_judged(k3s, run, c, "refuted", f"pods run ({len(running)}), so {sig} did not block them"))
        else:
            out.append(_judged(k3s, run, c, "inconclusive",
                               f"no pod runs, but {sig} is not in the log (signatures {ids})"))
    return out
