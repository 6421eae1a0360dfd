"""Notebooks 04, 06, 09 and 24: verdicts on the interception claims, from the recorded measurements of
``k3snb.tracing.measurements`` (plain rows/dicts as ``k3snb.record`` stores them; DataFrames work too).

Every function names the record keys it rests on as its evidence keys, and attributes errors to the
process that produced them (``runc`` / ``runc init`` / ``container process``, see
``studies.runc.process_roles``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..experiments._record import Verdict
from ._core import judged

S01_KEYS = ("kernel/panic", "kernel/panic_on_oops", "vm/panic_on_oom", "kernel/keys/root_maxkeys",
            "kernel/keys/root_maxbytes")
NINE_P = "0x1021997"
EXT4 = "0xef53"


def _rows(x: Any) -> list[dict[str, Any]]:
    if x is None:
        return []
    if hasattr(x, "to_dict"):
        return x.to_dict(orient="records")
    return [dict(r) for r in x]


def _missing(text: Any) -> bool:
    return "no such file" in str(text).lower()


# -- 04 ---------------------------------------------------------------------------------------------
def procsys_redirect(reads: Any, runner: str) -> Verdict:
    """Exp 04 from the ``reads`` table (reader, key, plain, intercepted, fake_value) of one runner.

    reproduced: keys missing without the interceptor, and every reader of them saw the fake value;
    refuted: some reader of a missing key did not; inconclusive: no key was missing here (nothing to fix).
    """
    rows = _rows(reads)
    missing = [r for r in rows if _missing(r["plain"])]
    ev = {"reads": rows}
    if not missing:
        return judged("Exp 04", "inconclusive", ev, f"no probed key is missing in the {runner} runner, so there "
                                                    "is nothing for the redirect to make readable")
    bad = [f"{r['reader']} {r['key']}" for r in missing if str(r["intercepted"]) != str(r["fake_value"])]
    keys = sorted({r["key"] for r in missing})
    if bad:
        return judged("Exp 04", "refuted", ev, f"{len(bad)} of {len(missing)} reads of missing keys did not see "
                                               f"the fake value in {runner}: {', '.join(bad[:4])}")
    return judged("Exp 04", "reproduced", ev, f"all {len(missing)} reads of the {len(keys)} keys missing in {runner} "
                                              f"({', '.join(keys)}) saw the fake value under the kit's interceptor")


DESCENDANTS = ("grandchild", "python-thread", "python-subprocess(vfork)")


def ptrace_descendants(reads: Any, runner: str) -> Verdict:
    """C4 ("ptrace can only trace direct children") from the ``reads`` table.

    refuted: the grandchild, the Python thread and the vfork child all read the fake value;
    reproduced: the shell (direct child) did but none of those; inconclusive otherwise.
    """
    rows = _rows(reads)
    ok = {r["reader"] for r in rows if str(r["intercepted"]) == str(r["fake_value"])}
    ev = {"reads": rows}
    reached = [d for d in DESCENDANTS if d in ok]
    if len(reached) == len(DESCENDANTS):
        return judged("C4", "refuted", ev, f"in {runner}, reads by a grandchild, a thread and a vfork child were "
                                           "rewritten (the tracer auto-attaches with TRACEFORK/VFORK/CLONE)")
    if "shell" in ok and not reached:
        return judged("C4", "reproduced", ev, f"in {runner}, only the direct child's reads were rewritten")
    return judged("C4", "inconclusive", ev, f"in {runner}, rewritten: {sorted(ok) or 'none'}")


def procsys_keys_absent(reads: Any, runner: str) -> Verdict:
    """S01 from the plain reads: the kubelet tunables probed here are absent in gVisor.

    Judged only in a gVisor runner (the claim is about gVisor); reproduced when every probed S01 key is
    missing, refuted when none is, inconclusive when some are.
    """
    rows = [r for r in _rows(reads) if r["key"] in S01_KEYS]
    keys = sorted({r["key"] for r in rows})
    if not runner.startswith("gvisor"):
        return judged("S01", "not-testable", {}, f"S01 is about gVisor; this run used the {runner} runner")
    if not keys:
        return judged("S01", "not-testable", {}, "no S01 key among the probed keys")
    absent = sorted({r["key"] for r in rows if _missing(r["plain"])})
    ev = {"reads": _rows(reads)}
    if set(absent) == set(keys):
        return judged("S01", "reproduced", ev, f"{', '.join(keys)}: no such file in {runner} (the other S01 keys "
                                               "were not probed here; notebook 00 probes all five)")
    if not absent:
        return judged("S01", "refuted", ev, f"{', '.join(keys)} readable in {runner}")
    return judged("S01", "inconclusive", ev, f"absent: {absent}; present: {sorted(set(keys) - set(absent))}")


# -- 06 ---------------------------------------------------------------------------------------------
def statfs_spoof(views: Any, runner: str) -> list[Verdict]:
    """Exp 06 and C5 from the ``statfs_views`` table (path, tool, plain, intercepted magic).

    Exp 06 reproduced: every 9p view became ext4 and no other type changed; refuted otherwise.
    C5 ("statfs cannot be intercepted") refuted: some 9p view changed; reproduced: none did.
    Both not-testable when no probed path is 9p (e.g. the host runner).
    """
    rows = _rows(views)
    ev = {"statfs_views": rows}
    nine = [r for r in rows if r["plain"] == NINE_P]
    if not nine:
        why = f"no probed path is 9p in the {runner} runner, so there is nothing to spoof"
        return [judged("Exp 06", "not-testable", {}, why), judged("C5", "not-testable", {}, why)]
    spoofed = [r for r in nine if r["intercepted"] == EXT4]
    others = [r for r in rows if r["plain"] != NINE_P]
    changed = [f"{r['path']} ({r['tool']})" for r in others if r["plain"] != r["intercepted"]]
    tools = sorted({r["tool"] for r in nine})
    if len(spoofed) == len(nine) and not changed:
        exp = judged("Exp 06", "reproduced", ev, f"all {len(nine)} 9p views ({', '.join(tools)}) read ext4 in "
                                                 f"{runner}; {len(others)} other views kept their type")
    else:
        exp = judged("Exp 06", "refuted", ev, f"{len(spoofed)}/{len(nine)} 9p views spoofed; other types changed: "
                                              f"{changed or 'none'}")
    if spoofed:
        c5 = judged("C5", "refuted", ev, f"the exit-stop rewrite of the statfs buffer was seen by {', '.join(tools)}")
    else:
        c5 = judged("C5", "reproduced", ev, "no 9p view changed under the interceptor")
    return [exp, c5]


def threaded_go_hang(go_run: Mapping[str, Any] | None, runner: str) -> Verdict:
    """S42, scoped to what ran: a small multi-threaded static Go program under the kit's interceptor
    (``go_threads_run``: returncode, timed_out, tasks_traced) — not k3s and not the research's tracer.

    reproduced: it hung (timed out); refuted: it finished with more than one thread traced;
    inconclusive: it failed, or only one thread was traced; not-testable: no Go toolchain.
    """
    scope = ("a small multi-threaded static Go program (built now) under the kit's interceptor (not k3s, "
             "not the research's Exp 06 tracer)")
    if go_run is None:
        return judged("S42", "not-testable", {}, "no Go toolchain here to build the threaded program "
                                                 "(apt-get install golang-go)")
    ev = {"go_threads_run": dict(go_run)}
    tasks = go_run.get("tasks_traced") or 0
    if go_run.get("timed_out"):
        return judged("S42", "reproduced", ev, f"{scope} hung in {runner}")
    if go_run.get("returncode") == 0 and tasks > 1:
        return judged("S42", "refuted", ev,
                      f"{scope} finished in {runner} with all its threads traced and resumed: tracing a "
                      "multi-threaded Go process does not by itself hang it; whether k3s hung under the "
                      "research's tracer for its resume-only-the-first-thread bug is not tested here")
    return judged("S42", "inconclusive", ev, f"{scope}: rc {go_run.get('returncode')}, {tasks} task(s) traced")


# -- 09 ---------------------------------------------------------------------------------------------
def preload_vs_static(reads: Any) -> Verdict:
    """Exp 09 from the ``reads`` table (program, static, plain, ld_preload, ptrace, fake_value).

    reproduced: LD_PRELOAD redirected the dynamic program but not the static Go one; refuted: it redirected
    the static one too, or not even the dynamic one; inconclusive: a program is missing from the table.
    """
    rows = _rows(reads)
    ev = {"reads": rows}
    dyn = [r for r in rows if not r["static"]]
    sta = [r for r in rows if r["static"]]
    if not dyn or not sta:
        return judged("Exp 09", "inconclusive", ev, "needs one dynamic and one static program in the table")
    pd_ok = all(str(r["ld_preload"]) == str(r["fake_value"]) for r in dyn)
    ps_ok = any(str(r["ld_preload"]) == str(r["fake_value"]) for r in sta)
    if pd_ok and not ps_ok:
        return judged("Exp 09", "reproduced", ev, "the shim (built now) redirected cat (dynamic, libc) but not the "
                                                  "static Go reader (no ELF interpreter, so LD_PRELOAD is never read)")
    return judged("Exp 09", "refuted", ev, f"LD_PRELOAD redirected the dynamic program: {pd_ok}, the static Go "
                                           f"program: {ps_ok}")


def _role(roles: Any, name: str) -> dict[str, Any] | None:
    return next((r for r in _rows(roles) if r["role"] == name), None)


def preload_runc_init(case: Mapping[str, Any]) -> Verdict:
    """C3 ("LD_PRELOAD got runc past cap_last_cap") from ``runc run`` traced with ``LD_PRELOAD`` set for runc
    (``runc_preload``: plain, traced, roles, runc_version, runner). Debian's runc is dynamically linked, so the
    shim does load into runc; what matters is whether runc init's read of cap_last_cap goes elsewhere.

    reproduced: runc init read cap_last_cap from the shim's target; refuted: runc init read the original
    path; inconclusive: runc init never read it (runc stopped before init) or the shim never loaded at all.
    """
    roles = _rows(case.get("roles"))
    ev = {"runc_preload": {k: v for k, v in case.items() if k != "trace"}}
    envs = [str(case["runner"])] if case.get("runner") else None  # the one runner runc ran in
    ver = case.get("runc_version", "?")
    runc, init = _role(roles, "runc"), _role(roles, "runc init")
    where = case.get("runner", "?")
    if runc is None or not runc.get("shim_loaded"):
        return judged("C3", "inconclusive", ev, f"the shim did not load into runc {ver} in {where}", envs)
    if init is None or not init["cap_last_cap_reads"]:
        return judged("C3", "inconclusive", ev, f"runc {ver} in {where} never reached a cap_last_cap read in runc "
                                                f"init ({case.get('plain', {}).get('stderr', '')[-160:]})", envs)
    redirected = any(p != "/proc/sys/kernel/cap_last_cap" for p in init["read_paths"])
    loaded = "loaded" if init.get("shim_loaded") else "did not load (runc starts init with a cleared environment)"
    if redirected:
        return judged("C3", "reproduced", ev, f"runc init of runc {ver} read cap_last_cap from the shim's target",
                      envs)
    return judged("C3", "refuted", ev,
                  f"runc {ver} (dynamically linked) in {where}: the shim loaded into runc, but runc's Go code reads "
                  f"cap_last_cap with its own syscalls (original path); in runc init the shim {loaded} and the read "
                  "went to the original path too. So LD_PRELOAD cannot get runc init past cap_last_cap", envs)


# -- 24 ---------------------------------------------------------------------------------------------
def _case_ev(cases: Mapping[str, Mapping[str, Any]], key: str = "runc_cases") -> dict[str, Any]:
    return {key: {k: {kk: vv for kk, vv in v.items() if kk != "trace"} for k, v in cases.items()}}


def _where(cases: Mapping[str, Mapping[str, Any]], labels: Any) -> list[str] | None:
    """The runners (``case["runner"]``) of the cases a status rests on; None when no case names its runner."""
    places = [str(cases[lb]["runner"]) for lb in labels if cases[lb].get("runner")]
    return places or None


def _container_ran(case: Mapping[str, Any]) -> bool:
    return bool(case["plain"]["stdout"].strip())


def runc_init_reached(cases: Mapping[str, Mapping[str, Any]]) -> list[Verdict]:
    """Exp 24 and C4 from traced ``runc run`` cases (label -> plain, traced, roles, rootfs_fake, runner).

    Exp 24 ("interception never reaches runc init"): refuted when runc init's cap_last_cap read was rewritten
    in some case; reproduced when the container ran yet runc init's read was never rewritten;
    inconclusive when runc never reached init. C4 ("only direct children"): refuted when both runc init and
    the container process (new pid and mount namespaces) had reads rewritten; reproduced when only runc
    (the direct child) had; inconclusive otherwise.
    """
    ev = _case_ev(cases)
    init_hit, both_hit, only_runc, ran = [], [], [], []
    for label, c in cases.items():
        if not c.get("redirect", True):
            continue
        runc, init, cont = (_role(c["roles"], n) for n in ("runc", "runc init", "container process"))
        if init is not None or cont is not None:
            ran.append(label)
        if init and init["rewritten"]:
            init_hit.append(label)
            if cont and cont["rewritten"]:
                both_hit.append(label)
        elif runc and runc["rewritten"] and label in ran and not (cont and cont["rewritten"]):
            only_runc.append(label)  # the container ran, yet only runc itself was reached
    not_reached = [lb for lb in cases if lb not in ran]
    tail = f". runc never reached init in: {'; '.join(not_reached)}" if not_reached else ""
    # each verdict speaks for the environments of the cases its status rests on
    if init_hit:
        exp = judged("Exp 24", "refuted", ev, f"runc init's cap_last_cap read was rewritten in: {'; '.join(init_hit)}"
                                              + tail, _where(cases, init_hit))
    elif ran:
        exp = judged("Exp 24", "reproduced", ev, f"runc init ran but its read was never rewritten ({'; '.join(ran)})",
                     _where(cases, ran))
    else:
        exp = judged("Exp 24", "inconclusive", ev, "runc never reached runc init in any case" + tail,
                     _where(cases, cases))
    if both_hit:
        c4 = judged("C4", "refuted", ev, "reads were rewritten in runc init and in the container process (new pid "
                                         f"and mount namespaces, grandchildren of runc) in: {'; '.join(both_hit)}" + tail,
                    _where(cases, both_hit))
    elif only_runc and not init_hit:
        c4 = judged("C4", "reproduced", ev, f"only runc itself was rewritten in: {'; '.join(only_runc)}",
                    _where(cases, only_runc))
    else:
        c4 = judged("C4", "inconclusive", ev, "no case where runc reached the container process" + tail,
                    _where(cases, cases))
    return [exp, c4]


def _per_build(statuses: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """One status from per-build (status, why): the common status, else inconclusive; the reason lists each."""
    reason = "; ".join(f"{b}: {s} — {why}" for b, (s, why) in statuses.items())
    kinds = {s for s, _ in statuses.values()}
    return (kinds.pop() if len(kinds) == 1 else "inconclusive"), reason


def _s31_text(stderr: str) -> bool:
    s = stderr.lower()
    return "cap_last_cap" in s and "no such file" in s


def runc_in_gvisor(builds: Mapping[str, Mapping[str, Any]]) -> list[Verdict]:
    """C2 and S31 per runsc build from plain ``runc run`` in gVisor with a full cgroup v1 layout
    (build -> plain, roles, cgroup controllers, runc_version). Results from the host are not used.

    S31 ("runc init fails: cap_last_cap missing in gVisor"), per build: reproduced when runc's error is S31;
    refuted when the container's process ran; inconclusive when runc stopped before init for another reason.
    C2 ("an isolation boundary configuration cannot get round"), per build: refuted when runc ran the
    container with only configuration changes (the cgroup layout); reproduced when it stopped in runc init
    (S31); inconclusive when it stopped earlier. Builds that disagree make the status inconclusive.
    """
    if not builds:
        why = "no gVisor build was run"
        return [judged("C2", "not-testable", {}, why), judged("S31", "not-testable", {}, why)]
    ev = _case_ev(builds, "runc_in_gvisor")
    s31: dict[str, tuple[str, str]] = {}
    c2: dict[str, tuple[str, str]] = {}
    for label, c in builds.items():
        b = c.get("runner") or label  # with the runsc version and platform when recorded
        err = c["plain"]["stderr"].strip().splitlines()[-1:] or [""]
        ctl = ",".join(c.get("controllers") or [])
        if _container_ran(c):
            s31[b] = ("refuted", f"runc init passed and the container printed cap_last_cap = "
                                 f"{c['plain']['stdout'].split()[0]}")
            c2[b] = ("refuted", f"runc {c.get('runc_version', '?')} ran the container with cgroup v1 ({ctl}) "
                                "mounted — configuration was enough")
        elif _s31_text(c["plain"]["stderr"]):
            s31[b] = ("reproduced", "runc init failed with the S31 text")
            c2[b] = ("reproduced", "runc stopped in runc init at cap_last_cap")
        else:
            s31[b] = ("inconclusive", f"runc stopped before runc init: {err[0][-120:]}")
            c2[b] = ("inconclusive", f"runc stopped before runc init ({err[0][-120:]}), with cgroup v1 ({ctl})")
    return [_v("C2", c2, ev), _v("S31", s31, ev)]


def _v(claim: str, per: dict[str, tuple[str, str]], ev: dict[str, Any]) -> Verdict:
    status, reason = _per_build(per)
    return judged(claim, status, ev, reason, environments=list(per))


def redirect_enoent(cases: Mapping[str, Mapping[str, Any]]) -> Verdict:
    """H1 per process, from traced runs whose redirect target exists only outside the container
    (``rootfs_fake`` None; the seed interceptor's situation).

    reproduced: runc init's read of the rewritten path failed with ENOENT (that is the S31 error);
    refuted: runc init read it without error — only the container's own process got ENOENT, which is
    not S31; inconclusive: no such case reached runc init.
    """
    seed = {k: c for k, c in cases.items() if c.get("redirect", True) and c.get("rootfs_fake") is None}
    if not seed:
        return judged("H1", "not-testable", {}, "no traced run with the target only outside the container")
    ev = _case_ev(seed, "h1_cases")
    enoent, ok_init = [], []
    detail = []
    for label, c in seed.items():
        init, cont = _role(c["roles"], "runc init"), _role(c["roles"], "container process")
        if init is None or not init["rewritten"]:
            continue
        if "ENOENT" in init["errno"]:
            enoent.append(label)
        else:
            ok_init.append(label)
            detail.append(f"{label}: runc init read the rewritten path ({init['errno']}), container process "
                          f"{cont['errno'] if cont else 'did not run'}")
    ver = next(iter(seed.values())).get("runc_version", "?")
    if enoent:
        return judged("H1", "reproduced", ev, f"runc init got ENOENT reading the rewritten path in: {'; '.join(enoent)}",
                      _where(seed, enoent))
    if ok_init:
        return judged("H1", "refuted", ev,
                      f"for runc {ver}: runc init reads cap_last_cap before pivot_root, where the target outside "
                      f"the container still resolves; only the container's own process fails ({'; '.join(detail)}). "
                      "The ENOENT the redirect causes is the container program's, not S31's runc-init error; runc "
                      "versions that read cap_last_cap later (the research's k3s-bundled runc) were not tested",
                      _where(seed, ok_init))
    return judged("H1", "inconclusive", ev, "runc init's read was not rewritten in any seed-setup case",
                  _where(seed, seed))
