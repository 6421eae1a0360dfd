"""Notebooks 25, 29 and 21: the container-runtime boundary (runc/crun/containerd) judged per runsc build.

Evidence is the rows of :mod:`k3snb.runtime.experiments` (one per environment × runtime × path, or per
snapshotter / containerd setting), recorded by the notebook under the key each function names. Results
from the host are context only: a verdict on gVisor rests on gVisor rows, per build, and builds that
disagree are reported per build in the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..experiments._record import Verdict
from ._core import judged
from ._core import version_text as _ver
from ._core import versions_text as _vers

Rows = Sequence[Mapping[str, Any]]

ADDENDUM_MOUNT = {"cpu", "cpuacct", "cpuset", "devices", "memory", "pids"}
ADDENDUM_REFUSE = {"freezer", "blkio"}


def _gv(rows: Rows) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if str(r["env"]).startswith("gvisor"):
            out.setdefault(str(r["env"]), []).append(r)
    return out


def _pick(rows: Sequence[Mapping[str, Any]], **kw: Any) -> Mapping[str, Any] | None:
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def _combine(claim: str, per: dict[str, tuple[str, str]], evidence: Mapping[str, Any]) -> Verdict:
    """One verdict from per-build (status, reason): agreeing builds give that status; else inconclusive."""
    statuses = {s for s, _ in per.values()}
    reason = "; ".join(f"{b}: {why}" for b, (_, why) in sorted(per.items()))
    status = statuses.pop() if len(statuses) == 1 else "inconclusive"
    if status == "inconclusive" and len(per) > 1 and len({s for s, _ in per.values()}) > 1:
        reason = "the builds disagree — " + reason
    return judged(claim, status, evidence, reason, environments=sorted(per))


def _fail_text(r: Mapping[str, Any]) -> str:
    return f"{r['failed_stage']} failed ({r.get('signature') or 'no signature'}): {str(r.get('error') or '')[:110]}"


# -- notebook 25: runc (and crun) in gVisor ---------------------------------------------------------
def minimal_runc_runs(rows: Rows, key: str = "runtime_matrix") -> Verdict:
    """Exp 25 ("a minimal runc container runs in gVisor"), per build, from direct ``runc run`` of a busybox
    bundle (pid/ipc/uts/mount namespaces, no capabilities). reproduced: it printed its output; refuted: it
    failed; not-testable: no gVisor row."""
    per: dict[str, tuple[str, str]] = {}
    for env, rs in _gv(rows).items():
        r = _pick(rs, via="direct", runtime="runc")
        if r is None:
            continue
        if r["ran"]:
            per[env] = ("reproduced", f"{_ver(r, 'runc')} ran busybox and printed {r['stdout']!r} with cgroup v1 "
                                      f"({r['cgroups']}) mounted by the kit")
        else:
            per[env] = ("refuted", f"{_ver(r, 'runc')}: " + _fail_text(r))
    if not per:
        return judged("Exp 25", "not-testable", {}, "no direct runc run in a gVisor sandbox")
    return _combine("Exp 25", per, {key: list(rows)})


def runc_init_boundary(rows: Rows, key: str = "runtime_matrix") -> Verdict:
    """C2 claim A ("the pod blocker is a runc-init isolation boundary no userspace workaround gets past"),
    per build, from containerd+runc. refuted: the container ran (runc init passed in the sandbox, with only
    configuration: cgroup mounts); reproduced: it stopped at runtime_init; inconclusive: it stopped at another
    stage (which says nothing about runc init)."""
    per: dict[str, tuple[str, str]] = {}
    for env, rs in _gv(rows).items():
        r = _pick(rs, via="containerd", runtime="runc")
        if r is None:
            continue
        what = f"{_ver(r, 'containerd')} + {_ver(r, 'runc')}"
        if r["ran"]:
            per[env] = ("refuted", f"{what} ran the container (runc init passed) with cgroup v1 "
                                   f"({r['cgroups']}) mounted — configuration was enough")
        elif r["failed_stage"] == "runtime_init":
            per[env] = ("reproduced", f"{what}: runc stopped in runc init: " + _fail_text(r))
        else:
            per[env] = ("inconclusive", f"{what}: stopped before runc init: " + _fail_text(r))
    if not per:
        return judged("C2", "not-testable", {}, "no containerd+runc run in a gVisor sandbox")
    return _combine("C2", per, {key: list(rows)})


def cgroups_for_runc(rows: Rows, key: str = "runtime_matrix") -> Verdict:
    """gvisor-matrix addendum 2 (runsc 2024): without cgroup mounts runc stops at ``no cgroup mount found in
    mountinfo``; cpu, cpuacct, memory, devices, pids, cpuset mount and freezer, blkio refuse; then
    containerd+runc runs the container. Judged on the 2024 rows only.

    reproduced: all three parts hold; refuted: any part contradicted (the no-cgroup run worked or failed
    otherwise, a controller list differs, or containerd+runc failed with the mounts); not-testable: no 2024 rows.
    """
    rs = _gv(rows).get("gvisor:2024")
    probe = _pick(rs or [], via="direct, no cgroups")
    ctd = _pick(rs or [], via="containerd", runtime="runc")
    if not rs or probe is None or ctd is None:
        return judged("addendum 2: runc cgroups", "not-testable", {},
                      "needs the runsc 2024 build: no gVisor 2024 rows with the no-cgroup probe and containerd+runc")
    ev = {key: list(rows)}
    mounted = set(filter(None, str(ctd["cgroups"]).split(",")))
    refused = set(filter(None, str(ctd.get("cgroups_refused") or "").split(",")))
    wrong = []
    if probe["ran"] or probe.get("signature") != "R02":
        wrong.append("without cgroup mounts runc " + ("ran" if probe["ran"] else _fail_text(probe)))
    if mounted != ADDENDUM_MOUNT or refused != ADDENDUM_REFUSE:
        wrong.append(f"mounted {sorted(mounted)}, refused {sorted(refused)}")
    if not ctd["ran"]:
        wrong.append("containerd+runc with the mounts: " + _fail_text(ctd))
    what = f"runsc 2024, {_vers([probe, ctd], 'runc')}, {_ver(ctd, 'containerd')}"
    if wrong:
        return judged("addendum 2: runc cgroups", "refuted", ev, f"{what}: " + "; ".join(wrong),
                      environments=["gvisor:2024"])
    return judged("addendum 2: runc cgroups", "reproduced", ev,
                  f"{what}: no cgroup mount → R02 (no cgroup mount found in mountinfo); "
                  f"{', '.join(sorted(mounted))} mount, {', '.join(sorted(refused))} refuse; then "
                  "containerd + runc printed the container's output", environments=["gvisor:2024"])


# -- notebook 29: standalone containerd and its config (Exps 28, 29, 31) ------------------------------
def standalone_boots(rows: Rows, key: str = "containerd_config") -> Verdict:
    """Exp 29 (a standalone containerd with its own config and socket serves CRI inside the sandbox), per
    build: reproduced when the CRI plugin loaded with the research's settings (unprivileged toggles false);
    refuted when containerd or its CRI plugin failed; not-testable without gVisor rows."""
    per: dict[str, tuple[str, str]] = {}
    for env, rs in _gv(rows).items():
        r = _pick(rs, unprivileged_ports_icmp=False)
        if r is None:
            continue
        if r["cri_plugin"] == "ok":
            per[env] = ("reproduced", f"{_ver(r, 'containerd')} booted from the kit's config with CRI ok")
        else:
            per[env] = ("refuted", f"CRI plugin {r['cri_plugin']}: {r['error'][:120]}")
    if not per:
        return judged("Exp 29", "not-testable", {}, "no containerd started in a gVisor sandbox")
    return _combine("Exp 29", per, {key: list(rows)})


def _unpriv(rows: Rows) -> dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]]:
    out = {}
    for env, rs in _gv(rows).items():
        on, off = _pick(rs, unprivileged_ports_icmp=True), _pick(rs, unprivileged_ports_icmp=False)
        if on is not None and off is not None:
            out[env] = (on, off)
    return out


def unprivileged_kernel_check(rows: Rows, key: str = "containerd_config") -> Verdict:
    """Exp 28 ("the CRI plugin refuses unprivileged_icmp/port below kernel 4.11, even when they are false"),
    per build, from CRI loading with both toggles true and false under gVisor's reported kernel.

    reproduced: CRI fails with both; refuted: it fails with true and loads with false (the check respects
    false); not-testable: it loads with true — this containerd has no kernel check to test (the research's
    containerd 2.x was not available)."""
    pairs = _unpriv(rows)
    if not pairs:
        return judged("Exp 28", "not-testable", {}, "no containerd run with both toggle settings in gVisor")
    per: dict[str, tuple[str, str]] = {}
    for env, (on, off) in pairs.items():
        v = f"{_ver(on, 'containerd')}, kernel {on['kernel']}"
        if on["cri_plugin"] == "ok":
            per[env] = ("not-testable", f"{v}: CRI loads with the toggles true — this containerd has no "
                                        "kernel-version check (the research used 2.x)")
        elif off["cri_plugin"] == "ok":
            per[env] = ("refuted", f"{v}: true → {on['error'][:80]}; explicit false loads CRI")
        else:
            per[env] = ("reproduced", f"{v}: CRI fails with true and with false ({off['error'][:80]})")
    return _combine("Exp 28", per, {key: list(rows)})


def patched_containerd_needed(rows: Rows, key: str = "containerd_config") -> Verdict:
    """Exp 31 ("a containerd with ValidateEnableUnprivileged patched out is needed for CRI in gVisor"), per
    build: refuted when an unpatched containerd loads CRI with the research's config (toggles false) —
    judged only for containerd 2.x, the version patched; reproduced when CRI fails with false; not-testable
    when only another major version ran (its result is stated in the reason)."""
    pairs = _unpriv(rows)
    if not pairs:
        return judged("Exp 31", "not-testable", {}, "no containerd run with both toggle settings in gVisor")
    per: dict[str, tuple[str, str]] = {}
    for env, (on, off) in pairs.items():
        ver = str(off.get("containerd") or "")
        if not ver.startswith("2."):
            per[env] = ("not-testable", f"{_ver(off, 'containerd')} (not 2.x): CRI "
                                        f"{'loads' if off['cri_plugin'] == 'ok' else 'fails'} unpatched with false, "
                                        f"{'loads' if on['cri_plugin'] == 'ok' else 'fails'} with true")
        elif off["cri_plugin"] == "ok":
            per[env] = ("refuted", f"unpatched containerd {ver} loads CRI with the toggles false")
        else:
            per[env] = ("reproduced", f"unpatched containerd {ver} fails with false: {off['error'][:100]}")
    return _combine("Exp 31", per, {key: list(rows)})


# -- notebook 21: snapshotters on 9p (Exp 21, S12, S13) -----------------------------------------------
def native_snapshotter_bypass(rows: Rows, key: str = "snapshotters") -> Verdict:
    """Exp 21 ("--snapshotter=native removes the overlayfs requirement"), from containerd+runc per build and
    state location. reproduced: somewhere overlayfs fails and native runs on the same state; refuted: native
    fails wherever overlayfs does (it bypasses nothing); inconclusive: overlayfs never failed."""
    per: dict[str, tuple[str, str]] = {}
    for env, rs in _gv(rows).items():
        bypass, both_fail, fine = [], [], []
        for where in sorted({r["state_on"] for r in rs}):
            n, o = _pick(rs, state_on=where, snapshotter="native"), _pick(rs, state_on=where, snapshotter="overlayfs")
            if n is None or o is None:
                continue
            fs = n.get("state_fs") or where
            if n["ran"] and not o["ran"]:
                bypass.append(f"{where} ({fs}): overlayfs {o['failed_stage']} failed ({o.get('signature')}), native ran")
            elif not n["ran"] and not o["ran"]:
                both_fail.append(f"{where} ({fs}): both fail at {n['failed_stage']} ({n.get('signature')})")
            else:
                fine.append(f"{where} ({fs}): overlayfs {'ran' if o['ran'] else 'failed'}")
        if bypass:
            per[env] = ("reproduced", "; ".join(bypass + both_fail + fine))
        elif both_fail:
            per[env] = ("refuted", "; ".join(both_fail + fine))
        elif fine:
            per[env] = ("inconclusive", "nothing to bypass: " + "; ".join(fine))
    if not per:
        return judged("Exp 21", "not-testable", {}, "no snapshotter comparison in a gVisor sandbox")
    return _combine("Exp 21", per, {key: list(rows)})


def overlay_on_9p(rows: Rows, snap_rows: Rows, key: str = "overlay_mounts", snap_key: str = "snapshotters") -> list[Verdict]:
    """S12 ("overlay mounts fail on 9p: invalid argument / not permitted") and S13 (mount(8) of an overlay
    over 9p: wrong fs type), per build, from mount(8) of an overlay with its lower dir (and upper dir) on the
    sandbox's 9p workdir, plus the overlayfs snapshotter with its root on 9p.

    S13 reproduced: the overlay with a 9p lower dir does not mount; refuted: it mounts and reads/writes.
    S12 reproduced: an overlay whose dirs are on 9p fails (mount(8), or the overlayfs snapshotter where the
    native one runs on the same state — a failure both share is not about overlay); refuted: none fails.
    """
    ev = {key: list(rows), snap_key: list(snap_rows)}
    s13: dict[str, tuple[str, str]] = {}
    s12: dict[str, tuple[str, str]] = {}
    snaps = _gv(snap_rows)
    for env, rs in _gv(rows).items():
        low = _pick(rs, lower_on="workdir", upper_on="tmpfs")
        both = _pick(rs, lower_on="workdir", upper_on="workdir")
        if low is not None:
            s13[env] = (("refuted", f"an overlay over a {low['lower_fs']} lower dir (upper on tmpfs) mounts, "
                                    "reads and writes") if low["mounted"] and low["wrote_upper"]
                        else ("reproduced", f"overlay over a 9p lower dir fails: {low['error'][:90]}"))
        fails = []
        if both is not None and not both["mounted"]:
            fails.append(f"mount(8) with lower and upper on 9p fails ({both['error'][:70]})")
        snap = _pick(snaps.get(env, []), state_on="workdir", snapshotter="overlayfs")
        native = _pick(snaps.get(env, []), state_on="workdir", snapshotter="native")
        if snap is not None and not (native is not None and native["ran"]):
            snap = None  # native fails the same way: not an overlay failure (e.g. R01 unpack in 2022)
        if snap is not None and not snap["ran"]:
            fails.append(f"the overlayfs snapshotter with its root on 9p fails at {snap['failed_stage']} "
                         f"({snap.get('signature')})")
        checked = (both is not None) + (snap is not None)
        if fails:
            s12[env] = ("reproduced", "; ".join(fails))
        elif checked:
            s12[env] = ("refuted", "overlays with their dirs on 9p mount (mount(8) and the overlayfs snapshotter)")
    out = []
    out.append(_combine("S12", s12, ev) if s12 else judged("S12", "not-testable", {}, "no overlay on 9p in gVisor"))
    out.append(_combine("S13", s13, ev) if s13 else judged("S13", "not-testable", {}, "no overlay on 9p in gVisor"))
    return out


def unpack_in_2022(rows: Rows, key: str = "snapshotters") -> Verdict:
    """gvisor-matrix addendum 2 (runsc 2022): the layer unpack fails with ``failed to mount
    …/tmpmounts/containerd-mountN: invalid argument`` for the native and the overlayfs snapshotter.
    reproduced: both fail at layer_unpacked with that text (R01); refuted: either unpacks; not-testable:
    no 2022 rows."""
    rs = _gv(rows).get("gvisor:2022")
    if not rs:
        return judged("addendum 2: 2022 unpack", "not-testable", {}, "needs the runsc 2022 build")
    tmp = [r for r in rs if r["state_on"] == "tmpfs"] or rs
    ok = [r for r in tmp if r["failed_stage"] != "layer_unpacked" or r.get("signature") != "R01"]
    ev = {key: list(rows)}
    what = f"runsc 2022, {_vers(tmp, 'containerd')}"
    if ok:
        return judged("addendum 2: 2022 unpack", "refuted", ev, f"{what}: " + "; ".join(
            f"{r['snapshotter']}: {'ran' if r['ran'] else _fail_text(r)}" for r in ok), environments=["gvisor:2022"])
    return judged("addendum 2: 2022 unpack", "reproduced", ev,
                  f"{what}: " + ", ".join(sorted({r["snapshotter"] for r in tmp}))
                  + " fail at layer_unpacked with the tmpmounts mount EINVAL (R01)", environments=["gvisor:2022"])


# -- notebook 26: namespace progression (Exp 26, S33) --------------------------------------------------
EXP26_FAILS = ("4 +cgroup ns", "6 k3s-like", "7 caps + cgroup ns")


def namespace_progression(rows: Rows, key: str = "namespace_cases") -> list[Verdict]:
    """Exp 26 (of the seven configs, 1 minimal, 2 +network, 3 +user, 5 capabilities run; 4, 6, 7 — every
    one with a cgroup namespace — fail with S33) and S33 (runc's "cgroup namespaces aren't enabled": gVisor
    has no cgroup namespace), per build, for runc (the research's runtime; crun is reported in the reason).

    Exp 26 reproduced: runc's failing set is exactly 4, 6, 7, each with S33; refuted: runc's minimal config
    runs and the failing set differs; inconclusive: the minimal config itself fails (nothing to progress from).
    S33 reproduced: runc's cgroup-namespace configs fail with S33; refuted: one runs with a cgroup namespace;
    inconclusive: they fail for another reason."""
    e26: dict[str, tuple[str, str]] = {}
    s33: dict[str, tuple[str, str]] = {}
    for env, rs in _gv(rows).items():
        runc = {r["case"]: r for r in rs if r["runtime"] == "runc"}
        crun = {r["case"]: r for r in rs if r["runtime"] == "crun"}
        if not runc:
            continue
        note = ""
        c4 = crun.get("4 +cgroup ns")
        if c4 is not None:
            cv = _ver(c4, "crun")
            note = (f"; {cv} runs config 4 but its container gets no cgroup namespace (none in /proc/self/ns)"
                    if c4["ran"] and not c4["cgroup_ns"] else
                    f"; {cv} runs config 4 with a cgroup namespace" if c4["ran"] else
                    f"; {cv} fails config 4 ({c4.get('signature')})")
        rv = _vers(list(runc.values()), "runc")
        failing = sorted(c for c, r in runc.items() if not r["ran"])
        ns_cases = [runc[c] for c in EXP26_FAILS if c in runc]
        base = runc.get("1 minimal")
        if base is None or not base["ran"]:
            why = f"{rv}: the minimal config fails: " + (_fail_text(base) if base else "not run")
            e26[env] = ("inconclusive", why)
        elif tuple(failing) == EXP26_FAILS and all(r.get("signature") == "S33" for r in ns_cases):
            e26[env] = ("reproduced", f"{rv}: 1, 2, 3, 5 run; 4, 6, 7 fail with S33" + note)
        else:
            e26[env] = ("refuted", f"{rv} fails {', '.join(failing) or 'nothing'} (research: 4, 6, 7)" + note)
        if any(r["ran"] and r.get("cgroup_ns") for r in ns_cases):
            s33[env] = ("refuted", f"{rv} ran a config with a cgroup namespace" + note)
        elif ns_cases and all(r.get("signature") == "S33" for r in ns_cases):
            s33[env] = ("reproduced", f"every {rv} config with a cgroup namespace fails with S33" + note)
        elif ns_cases:
            s33[env] = ("inconclusive", f"{rv}: the cgroup-namespace configs fail otherwise: "
                                        + _fail_text(ns_cases[0]))
    ev = {key: list(rows)}
    return [_combine("Exp 26", e26, ev) if e26 else judged("Exp 26", "not-testable", {}, "no runc run in gVisor"),
            _combine("S33", s33, ev) if s33 else judged("S33", "not-testable", {}, "no runc run in gVisor")]


# -- notebook 27: runc's cap_last_cap patch (Exp 27) --------------------------------------------------
def cap_last_cap_patch(rows: Rows, key: str = "cap_last_cap") -> Verdict:
    """Exp 27 ("runc must be patched to fall back to cap_last_cap = 40 — the key is missing in gVisor — for
    a full config with capabilities to run"), per build, from unpatched runc running a capabilities config
    as is, with the key hidden (ENOENT) and with it faked to 40.

    refuted: the unpatched runc runs the config as is (where the key exists, its read succeeds; where it
    is absent, runc tolerates that); reproduced: as is fails with S31 and the fake 40 runs; inconclusive:
    runc fails before the capabilities matter (e.g. R03 in 2022). The hidden-key run is reported."""
    per: dict[str, tuple[str, str]] = {}
    for env, rs in _gv(rows).items():
        plain, hidden, fake = (_pick(rs, variant=v) for v in ("as is", "key hidden (ENOENT)", "key faked to 40"))
        if plain is None:
            continue
        note = ""
        if hidden is not None:
            note = (f"; with the key hidden (ENOENT on every read: {hidden['reads']}) runc {hidden['runc']} still runs it"
                    if hidden["ran"] else f"; with the key hidden: {_fail_text(hidden)}")
        if plain["ran"]:
            why = ("the key exists (" + str(plain["key"]) + ") and is read" if plain["key"] != "absent"
                   else "the key is absent and runc tolerates it")
            per[env] = ("refuted", f"unpatched runc {plain['runc']} runs the capabilities config: {why}" + note)
        elif plain.get("signature") == "S31" and fake is not None and fake["ran"]:
            per[env] = ("reproduced", "as is fails with S31; with cap_last_cap faked to 40 it runs" + note)
        else:
            per[env] = ("inconclusive", f"key {plain['key']}; runc fails before capabilities matter: "
                                        + _fail_text(plain))
    if not per:
        return judged("Exp 27", "not-testable", {}, "no runc run in gVisor")
    return _combine("Exp 27", per, {key: list(rows)})
