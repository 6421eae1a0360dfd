"""k3snb.studies: every verdict function on recorded evidence, once per status it can return (no root,
no sandbox). Probes come from data/probes/ (recorded by notebook 00's collector); the other evidence has
the shapes the notebooks record (rows as ``k3snb.record`` stores DataFrames), taken from stored runs and
varied where the recorded run shows only one outcome."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from k3snb.errors import InvalidParameter
from k3snb.studies import conclude, environment, get_claim, interception, k3s, list_claims, sandbox_deaths

ROOT = Path(__file__).resolve().parent.parent
PROBES = {n: json.loads((ROOT / "data" / "probes" / f"{n}.json").read_text())
          for n in ("host", "gvisor-2022", "gvisor-2024")}


def status(v):
    return v.status


# -- claims and conclude -------------------------------------------------------------------------
def test_every_registry_claim_has_a_sentence():
    from k3snb.experiments._registry import load_registry

    known = list_claims()
    missing = {e.id: [c for c in e.claims if c not in known] for e in load_registry().entries}
    assert not {k: v for k, v in missing.items() if v}, missing
    assert get_claim("C4").text.startswith("ptrace")
    with pytest.raises(InvalidParameter):
        get_claim("C999")


def test_conclude_records_exactly_the_registry_claims(monkeypatch):
    from k3snb.experiments import _record

    monkeypatch.delenv("K3SNB_RESULTS", raising=False)
    _record.reset()
    probes = {"gvisor-2022": PROBES["gvisor-2022"]}
    vs = environment.environment_claims(probes)
    table = conclude("00", vs)
    from k3snb.experiments._registry import load_registry

    assert table.claims() == list(load_registry()["00"].claims)
    assert [v["claim"] for v in _record.results()["verdicts"]] == table.claims()
    text = repr(table)
    assert sum(line.startswith("VERDICT ") for line in text.splitlines()) == len(vs)
    with pytest.raises(InvalidParameter, match="missing"):
        conclude("00", vs[1:])
    with pytest.raises(InvalidParameter, match="twice"):
        conclude("00", [*vs, vs[0]])
    with pytest.raises(InvalidParameter, match="not listed"):
        conclude("04", vs)
    _record.reset()


# -- 00 ------------------------------------------------------------------------------------------
def _as_gvisor(p):
    q = copy.deepcopy(p)
    q["sandbox"] = {**(q.get("sandbox") or {}), "kind": "gvisor"}
    q["label"] = "host-as-gvisor"
    return q


def test_environment_every_status():
    gv = {k: PROBES[k] for k in ("gvisor-2022", "gvisor-2024")}
    assert status(environment.environment_claim("§1.2 9p root", gv)) == "reproduced"
    assert status(environment.environment_claim("§1.2 9p root", [_as_gvisor(PROBES["host"])])) == "refuted"
    mixed = environment.environment_claim("§1.2 9p root", [PROBES["gvisor-2022"], _as_gvisor(PROBES["host"])])
    assert mixed.status == "inconclusive" and "gvisor-2022" in mixed.reason
    v = environment.environment_claim("S01", [PROBES["host"]])
    assert v.status == "not-testable" and "gvisor" in v.reason
    # build-specific claims only look at their build
    assert status(environment.environment_claim("§1.3 cap_last_cap", [PROBES["gvisor-2024"]])) == "not-testable"
    assert status(environment.environment_claim("matrix cap_last_cap 2024", [PROBES["gvisor-2024"]])) == "reproduced"
    with pytest.raises(InvalidParameter):
        environment.environment_claim("S01", [])


# -- 04 ------------------------------------------------------------------------------------------
FAKE = "65536"


def reads(missing=True, redirected=("shell", "subshell", "grandchild", "python-thread", "python-subprocess(vfork)")):
    rows = []
    for reader in ("shell", "subshell", "grandchild", "python-thread", "python-subprocess(vfork)"):
        for key in ("kernel/panic", "kernel/keys/root_maxkeys"):
            plain = f"cat: can't open '/proc/sys/{key}': No such file or directory" if missing else "0"
            rows.append({"reader": reader, "key": key, "plain": plain, "fake_value": FAKE,
                         "intercepted": FAKE if reader in redirected else plain})
    return rows


def test_procsys_redirect_every_status():
    assert status(interception.procsys_redirect(reads(), "gvisor 2022")) == "reproduced"
    assert status(interception.procsys_redirect(reads(redirected=("shell",)), "gvisor 2022")) == "refuted"
    assert status(interception.procsys_redirect(reads(missing=False), "host")) == "inconclusive"


def test_ptrace_descendants_every_status():
    assert status(interception.ptrace_descendants(reads(), "gvisor")) == "refuted"
    assert status(interception.ptrace_descendants(reads(redirected=("shell",)), "gvisor")) == "reproduced"
    assert status(interception.ptrace_descendants(reads(redirected=("shell", "grandchild")), "gvisor")) == "inconclusive"


def test_procsys_keys_absent_every_status():
    assert status(interception.procsys_keys_absent(reads(), "gvisor 2022")) == "reproduced"
    assert status(interception.procsys_keys_absent(reads(missing=False), "gvisor 2024")) == "refuted"
    mixed = [r if r["key"] == "kernel/panic" else {**r, "plain": "200"} for r in reads()]
    assert status(interception.procsys_keys_absent(mixed, "gvisor")) == "inconclusive"
    assert status(interception.procsys_keys_absent(reads(), "host")) == "not-testable"


# -- 06 ------------------------------------------------------------------------------------------
def views(spoof=True, nine_p=True):
    root = "0x1021997" if nine_p else "0xef53"
    return [{"path": "/", "tool": t, "plain": root, "intercepted": "0xef53" if spoof or not nine_p else root}
            for t in ("stat", "python")] + [{"path": "/proc", "tool": "stat", "plain": "0x9fa0", "intercepted": "0x9fa0"}]


def test_statfs_spoof_every_status():
    exp, c5 = interception.statfs_spoof(views(), "gvisor")
    assert (exp.status, c5.status) == ("reproduced", "refuted")
    exp, c5 = interception.statfs_spoof(views(spoof=False), "gvisor")
    assert (exp.status, c5.status) == ("refuted", "reproduced")
    assert {v.status for v in interception.statfs_spoof(views(nine_p=False), "host")} == {"not-testable"}


def test_threaded_go_hang_every_status_and_scope():
    done = interception.threaded_go_hang({"returncode": 0, "timed_out": False, "tasks_traced": 6}, "gvisor")
    assert done.status == "refuted" and "not k3s" in done.reason
    assert status(interception.threaded_go_hang({"returncode": None, "timed_out": True, "tasks_traced": 6},
                                                "gvisor")) == "reproduced"
    assert status(interception.threaded_go_hang({"returncode": 0, "timed_out": False, "tasks_traced": 1},
                                                "gvisor")) == "inconclusive"
    assert status(interception.threaded_go_hang(None, "gvisor")) == "not-testable"


# -- 09 ------------------------------------------------------------------------------------------
def preload_rows(go_redirected=False, dyn_redirected=True):
    return [{"program": "cat (dynamic, libc)", "static": False, "plain": "40", "fake_value": "38",
             "ld_preload": "38" if dyn_redirected else "40", "ptrace": "38"},
            {"program": "goread (static Go)", "static": True, "plain": "40", "fake_value": "38",
             "ld_preload": "38" if go_redirected else "40", "ptrace": "38"}]


def test_preload_vs_static_every_status():
    assert status(interception.preload_vs_static(preload_rows())) == "reproduced"
    assert status(interception.preload_vs_static(preload_rows(go_redirected=True))) == "refuted"
    assert status(interception.preload_vs_static(preload_rows(dyn_redirected=False))) == "refuted"
    assert status(interception.preload_vs_static(preload_rows()[:1])) == "inconclusive"


ORIG = "/proc/sys/kernel/cap_last_cap"


def role(name, *, shim=None, reads=1, paths=(ORIG,), rewritten=0, errno="ok"):
    return {"role": name, "processes": 1, "shim_loaded": shim, "cap_last_cap_reads": reads,
            "read_paths": list(paths), "rewritten": rewritten, "errno": errno}


# the roles of `runc run` under LD_PRELOAD as recorded on the host (runc 1.1.5): the shim loads into runc,
# not into runc init; both read the original path
PRELOAD_CASE = {"runner": "host", "runc_version": "1.1.5+ds1", "plain": {"returncode": 0, "stdout": "40", "stderr": ""},
                "roles": [role("runc", shim=True), role("runc init", shim=False),
                          role("container process", shim=False)]}


def test_preload_runc_init_every_status():
    v = interception.preload_runc_init(PRELOAD_CASE)
    assert v.status == "refuted" and "did not load" in v.reason
    redirected = copy.deepcopy(PRELOAD_CASE)
    redirected["roles"][1].update(shim=True, read_paths=["elsewhere (fake/cap_last_cap)"])
    assert status(interception.preload_runc_init(redirected)) == "reproduced"
    early = {**PRELOAD_CASE, "roles": [role("runc", shim=True)],
             "plain": {"returncode": 1, "stdout": "", "stderr": "mountpoint for devices not found"}}
    assert status(interception.preload_runc_init(early)) == "inconclusive"
    unloaded = {**PRELOAD_CASE, "roles": [role("runc", shim=False)]}
    assert status(interception.preload_runc_init(unloaded)) == "inconclusive"


# -- 24 ------------------------------------------------------------------------------------------
def case(label_runner="host", *, rootfs_fake="38", init_errno="ok", cont_errno="ok", reached=True, init_rw=1,
         cont_rw=1, stdout="38\n38", stderr=""):
    roles = [role("runc", rewritten=1, paths=("elsewhere (fake/cap_last_cap)",))]
    if reached:
        roles += [role("runc init", rewritten=init_rw, errno=init_errno),
                  role("container process", reads=2, rewritten=cont_rw, errno=cont_errno)]
    return {"runner": label_runner, "runc_version": "1.1.5+ds1", "rootfs_fake": rootfs_fake, "redirect": True,
            "plain": {"returncode": 0 if stdout else 1, "stdout": stdout, "stderr": stderr}, "roles": roles}


# as recorded by notebook 24 on the host and in gVisor 2024 (full cgroup v1): runc init's read of the
# rewritten path succeeds, only the container's cat gets ENOENT when the target is outside the rootfs
SEED = case(rootfs_fake=None, cont_errno="ENOENT", stdout="40")


def test_runc_init_reached_every_status():
    exp, c4 = interception.runc_init_reached({"host": case(), "gvisor 2022": case("gvisor 2022", reached=False,
                                                                                     stdout="")})
    assert (exp.status, c4.status) == ("refuted", "refuted") and "gvisor 2022" in exp.reason
    exp, c4 = interception.runc_init_reached({"host": case(init_rw=0, cont_rw=0)})
    assert (exp.status, c4.status) == ("reproduced", "reproduced")
    exp, c4 = interception.runc_init_reached({"gvisor 2022": case(reached=False, stdout="")})
    assert (exp.status, c4.status) == ("inconclusive", "inconclusive")


def test_runc_in_gvisor_every_status_per_build():
    ran = {**case("gvisor 2024", stdout="40"), "controllers": ["cpu", "devices"]}
    early = {**case("gvisor 2022", reached=False, stdout="",
                    stderr='level=error msg="runc run failed: mountpoint for devices not found"'), "controllers": ["cpu"]}
    s31 = {**case("gvisor 2022", reached=False, stdout="", stderr="error during container init: open "
                  "/proc/sys/kernel/cap_last_cap: no such file or directory")}
    c2, v = interception.runc_in_gvisor({"2024": ran})
    assert (c2.status, v.status) == ("refuted", "refuted")
    c2, v = interception.runc_in_gvisor({"2022": s31})
    assert (c2.status, v.status) == ("reproduced", "reproduced")
    c2, v = interception.runc_in_gvisor({"2022": early, "2024": ran})
    assert (c2.status, v.status) == ("inconclusive", "inconclusive")
    assert "2022: inconclusive" in v.reason and "2024: refuted" in v.reason
    assert {x.status for x in interception.runc_in_gvisor({})} == {"not-testable"}


def test_redirect_enoent_judged_per_process():
    v = interception.redirect_enoent({"host (seed)": SEED, "host": case()})
    assert v.status == "refuted" and "runc init read the rewritten path" in v.reason
    assert status(interception.redirect_enoent({"s": case(rootfs_fake=None, init_errno="ENOENT")})) == "reproduced"
    assert status(interception.redirect_enoent({"s": case(rootfs_fake=None, reached=False)})) == "inconclusive"
    assert status(interception.redirect_enoent({"host": case()})) == "not-testable"


# -- k3s notebooks -----------------------------------------------------------------------------------
NO_K3S = {"available": False, "reason": "no k3s binary found (looked at: ...). set K3SNB_K3S=/path"}
K3S = {"available": True, "version": "v1.33.5+k3s1"}


def run(reached="readyz", sigs=(), alive=True, observed=0.0, pods=(), created=True):
    stages = ["process", "kubeconfig", "readyz", "node-registered", "node-ready"]
    upto = stages.index(reached) if reached else -1
    return {"profile": "p", "signatures": list(sigs), "alive_at_end": alive, "observed_s": observed,
            "readiness": {"summary": {"reached": reached, "ok": upto >= 2},
                          "stages": [{"stage": s, "reached": i <= upto, "seconds": 10.0 * (i + 1)}
                                     for i, s in enumerate(stages)]},
            "manifests": [{"kind": "ConfigMap", "created": created}], "objects": {"pods": [list(p) for p in pods]}}


def test_k3s_without_binary_is_not_testable_with_the_fix():
    v = k3s.api_ready("Exp 05", NO_K3S, None, what="x")
    assert v.status == "not-testable" and "K3SNB_K3S" in v.reason


def test_signature_seen_and_cleared_every_status():
    assert status(k3s.signature_seen("S11", "S11", K3S, run("kubeconfig", ["S11"]))) == "reproduced"
    assert status(k3s.signature_seen("S11", "S11", K3S, run("readyz"))) == "refuted"
    assert status(k3s.signature_seen("S11", "S11", K3S, run("kubeconfig"))) == "inconclusive"
    assert status(k3s.signature_cleared("S10", "S10", K3S, run("readyz"), by="fake CNI")) == "reproduced"
    assert status(k3s.signature_cleared("S10", "S10", K3S, run("readyz", ["S10"]), by="fake CNI")) == "refuted"
    assert status(k3s.signature_cleared("S10", "S10", K3S, run("process"), by="fake CNI")) == "inconclusive"
    assert status(k3s.signature_seen("S03", "S03", K3S, run("readyz", ["S03b"]))) == "reproduced"


def test_api_ready_and_c6_every_status():
    assert status(k3s.api_ready("Exp 01", K3S, run("readyz"), what="x")) == "reproduced"
    assert status(k3s.api_ready("Exp 01", K3S, run("kubeconfig", ["S11"]), what="x")) == "refuted"
    assert status(k3s.disable_agent_hang(K3S, run("kubeconfig", ["S11"]))) == "reproduced"
    assert status(k3s.disable_agent_hang(K3S, run("readyz"))) == "refuted"
    assert status(k3s.disable_agent_hang(K3S, run("process"))) == "inconclusive"
    assert status(k3s.disable_agent_hang(NO_K3S, None)) == "not-testable"


def test_native_worker_and_ultimate_every_status():
    assert status(k3s.native_worker(K3S, run("node-registered", ["S03"]))) == "reproduced"
    assert status(k3s.native_worker(K3S, run("node-ready"))) == "refuted"
    assert status(k3s.native_worker(K3S, run("readyz"))) == "inconclusive"
    assert status(k3s.ultimate(K3S, run("readyz", ["S18"]))) == "reproduced"
    assert status(k3s.ultimate(K3S, run("readyz", ["S15"]))) == "refuted"
    assert status(k3s.ultimate(K3S, run("process"))) == "inconclusive"


def test_local_storage_flag_every_status():
    def st(w, wo):
        return [v.status for v in k3s.local_storage_flag(K3S, run("readyz", w), run("readyz", wo))]
    assert st(["S01"], ["S03"]) == ["reproduced", "refuted", "reproduced"]
    assert st(["S03"], ["S03"]) == ["refuted", "reproduced", "reproduced"]
    assert st([], []) == ["inconclusive", "inconclusive", "refuted"]
    assert {v.status for v in k3s.local_storage_flag(NO_K3S, None, None)} == {"not-testable"}


def test_hook_fatal_every_status():
    assert status(k3s.hook_fatal(K3S, run("readyz", ["S18"], alive=False))) == "reproduced"
    assert status(k3s.hook_fatal(K3S, run("readyz", ["S18"], alive=True, observed=300))) == "refuted"
    assert status(k3s.hook_fatal(K3S, run("readyz"))) == "inconclusive"


def test_stays_up_never_calls_five_minutes_fifteen():
    five = run("node-registered", observed=300)
    assert status(k3s.stays_up("Exp 15", K3S, five, claimed_s=300)) == "reproduced"
    c9 = k3s.stays_up("C9", K3S, five, claimed_s=900)
    assert c9.status == "inconclusive" and "300 s of the 900 s" in c9.reason
    assert status(k3s.stays_up("C9", K3S, run("node-registered", observed=900), claimed_s=900)) == "reproduced"
    assert status(k3s.stays_up("C9", K3S, run("node-registered", alive=False, observed=120), claimed_s=900)) == "refuted"


def test_manifests_and_pods_every_status():
    def st(r):
        return [v.status for v in k3s.manifests_and_pods(K3S, r)]
    assert st(run("node-registered", ["S20"], pods=[("a", "Pending")])) == ["reproduced", "refuted", "inconclusive",
                                                                          "reproduced"]
    assert st(run("node-ready", pods=[("a", "Running")])) == ["refuted", "reproduced", "refuted", "refuted"]
    assert st(run("node-registered", ["S31"])) == ["reproduced", "inconclusive", "reproduced", "inconclusive"]
    assert st(run("kubeconfig"))[0] == "inconclusive"
    assert {v.status for v in k3s.manifests_and_pods(NO_K3S, None)} == {"not-testable"}


def test_k3s_reasons_name_the_runner_build_and_k3s_version_the_run_recorded():
    g24 = {**run("kubeconfig", ["S11"]), "runner": "gvisor-2024",
           "info": {"k3s": {"version": "v1.31.2+k3s1"},
                    "runner": {"kind": "gvisor", "runsc_version": "0.0~20240729.0", "platform": "systrap"}}}
    where = "k3s v1.31.2+k3s1 in gvisor-2024 (runsc 0.0~20240729.0, systrap): "
    for v in (k3s.signature_seen("S11", "S11", K3S, g24), k3s.api_ready("Exp 01", K3S, g24, what="x"),
              k3s.disable_agent_hang(K3S, g24), k3s.native_worker(K3S, g24), k3s.ultimate(K3S, g24),
              k3s.hook_fatal(K3S, g24), k3s.stays_up("C9", K3S, g24, claimed_s=900),
              *k3s.manifests_and_pods(K3S, g24), *k3s.local_storage_flag(K3S, g24, g24)):
        assert v.reason.startswith(where), v  # the run's k3s, not the binary status's v1.33.5
    assert k3s.api_ready("Exp 01", K3S, g24, what="x").evidence["run"]["environment"]["runner"] == "gvisor-2024"
    host = {**run("readyz"), "runner": "host", "info": {"k3s": {"version": "v1.31.2+k3s1"}, "runner": {"kind": "host"}}}
    assert k3s.api_ready("Exp 01", K3S, host, what="x").reason.startswith("k3s v1.31.2+k3s1 in host: x: readyz")
    # nothing recorded: said so, with the binary's version as the fallback, never a guessed build
    assert k3s.api_ready("Exp 01", K3S, run(), what="x").reason.startswith("k3s v1.33.5+k3s1 in a runner not recorded: ")
    v = k3s.api_ready("Exp 01", {"available": True}, run(), what="x")
    assert v.reason.startswith("k3s (version not recorded) in a runner not recorded: ")


# -- 91 --------------------------------------------------------------------------------------------
def srow(config, n, deaths=0, panics=0, source="stored study", version="0.0~20240729.0"):
    from k3snb.runners.stability import upper_bound

    return {"source": source, "runsc_version": version, "config": config, "sandboxes": n, "deaths": deaths,
            "failed_creates": 0, "deaths_with_notes_panic": panics, "upper95": round(upper_bound(deaths, n), 4)}


# as stored in data/benchmarks/runsc-2024-stability.json (per configuration, sources summed)
STUDY = [srow("default", 238), srow("raw-detach", 138), srow("file-access=shared", 118), srow("directfs=false", 118)]


def test_sandbox_deaths_judges_the_notes_recipe_on_its_own():
    v = sandbox_deaths.sandbox_deaths(STUDY, "0.0~20240729.0-4+b7")
    assert v.status == "refuted" and "raw-detach 0/138" in v.reason and "2.15%" in v.reason
    assert "default 0/238" in v.reason  # reported separately, never pooled
    assert status(sandbox_deaths.sandbox_deaths([*STUDY[:1], srow("raw-detach", 5)])) == "inconclusive"
    assert status(sandbox_deaths.sandbox_deaths([*STUDY, srow("default", 4, 1, 1, "this run")])) == "reproduced"
    assert status(sandbox_deaths.sandbox_deaths([*STUDY, srow("default", 4, 1, 0, "this run")])) == "inconclusive"


def test_file_access_shared_every_status():
    assert status(sandbox_deaths.file_access_shared(STUDY)) == "inconclusive"
    assert status(sandbox_deaths.file_access_shared([srow("file-access=shared", 3), srow("default", 5, 4)])) == "reproduced"
    assert status(sandbox_deaths.file_access_shared([srow("file-access=shared", 3, 1)])) == "refuted"
    assert status(sandbox_deaths.file_access_shared([*STUDY, srow("overlay2=none", 5, 1)])) == "refuted"
    assert status(sandbox_deaths.file_access_shared(STUDY[:2])) == "not-testable"


def test_kit_default_every_status():
    assert status(sandbox_deaths.kit_default(STUDY, [])) == "reproduced"
    assert status(sandbox_deaths.kit_default([srow("default", 10, 1)], [])) == "refuted"
    assert status(sandbox_deaths.kit_default([srow("default", 10)], [])) == "inconclusive"
    assert status(sandbox_deaths.kit_default(STUDY, ["--directfs=false"])) == "not-testable"


def test_rows_of_another_runsc_version_are_named_as_left_out_never_silently_dropped():
    other = [srow("default", 50, 5, 5, "old study", "0.0~20221219.0"), srow("raw-detach", 20, 1, 0, "old study",
                                                                          "0.0~20221219.0")]
    for v in (sandbox_deaths.sandbox_deaths([*STUDY, *other], "0.0~20240729.0-4+b7"),
              sandbox_deaths.file_access_shared([*STUDY, *other]), sandbox_deaths.kit_default([*STUDY, *other], [])):
        # judged on the first row's version only: the old study's deaths (and panics) are not summed in ...
        assert "default 0/238" in v.reason and "0/288" not in v.reason
        # ... and the reason says what was left out, per source, with its version and configurations
        assert v.reason.endswith(". Left out, another runsc version than the judged 0.0~20240729.0: "
                                 "old study (runsc 0.0~20221219.0: default, raw-detach)"), v.reason
    assert sandbox_deaths.sandbox_deaths([*STUDY, *other]).status == "refuted"  # not the old study's panics
    assert "Left out" not in sandbox_deaths.sandbox_deaths(STUDY).reason  # nothing left out: nothing said
    v = sandbox_deaths.file_access_shared([STUDY[0], srow("file-access=shared", 30, source="x", version="other")])
    assert v.status == "not-testable" and "Left out" in v.reason and "x (runsc other: file-access=shared)" in v.reason


# -- the stored notebooks' own recorded evidence (results.json of the runs the notebooks were stored from) ---
RECORDED = json.loads((ROOT / "tests" / "data" / "studies" / "recorded.json").read_text())


def test_recorded_runs_give_the_stored_verdicts():
    r04, r06, r09, r24, r91 = (RECORDED[k] for k in ("04", "06", "09", "24", "91"))
    got = {
        "04": [v.status for v in (interception.procsys_redirect(r04["reads"], r04["runner"]),
                                  interception.ptrace_descendants(r04["reads"], r04["runner"]),
                                  interception.procsys_keys_absent(r04["reads"], r04["runner"]))],
        "06": [v.status for v in (*interception.statfs_spoof(r06["statfs_views"], r06["runner"]),
                                  interception.threaded_go_hang(r06["go_threads_run"], r06["runner"]))],
        "09": [interception.preload_vs_static(r09["reads"]).status,
               interception.preload_runc_init(r09["runc_preload"]).status],
        "24": [v.status for v in (*interception.runc_init_reached(r24["runc_cases"]),
                                  *interception.runc_in_gvisor(r24["runc_in_gvisor"]),
                                  interception.redirect_enoent(r24["runc_cases"]))],
        "91": [sandbox_deaths.sandbox_deaths(r91["stability_rows"], r91["runsc_provenance"]["package"]).status,
               sandbox_deaths.file_access_shared(r91["stability_rows"]).status,
               sandbox_deaths.kit_default(r91["stability_rows"], [], r91["runsc_provenance"]["package"]).status],
    }
    assert got == {
        "04": ["reproduced", "refuted", "reproduced"],
        "06": ["reproduced", "refuted", "refuted"],
        "09": ["reproduced", "refuted"],
        "24": ["refuted", "refuted", "inconclusive", "inconclusive", "refuted"],
        "91": ["refuted", "inconclusive", "reproduced"],
    }


def test_recorded_runc_run_judged_per_process():
    """H1 on the recorded seed-setup runs: runc init read the rewritten path fine; the ENOENT is the container's.
    The same record with runc init's outcome set to ENOENT (what H1 predicts) flips the verdict."""
    cases = RECORDED["24"]["runc_cases"]
    seed = {k: c for k, c in cases.items() if c["rootfs_fake"] is None}
    inits = [r for c in seed.values() for r in c["roles"] if r["role"] == "runc init"]
    assert inits and all(r["errno"] == "ok" and r["rewritten"] for r in inits)
    flipped = copy.deepcopy(seed)
    for c in flipped.values():
        for r in c["roles"]:
            if r["role"] == "runc init":
                r["errno"] = "ENOENT"
    assert interception.redirect_enoent(flipped).status == "reproduced"
    # per build: the recorded 2022 run stops before init, the 2024 run passes it
    by_build = RECORDED["24"]["runc_in_gvisor"]
    c2, s31 = interception.runc_in_gvisor({"gvisor-2024": by_build["gvisor-2024"]})
    assert (c2.status, s31.status) == ("refuted", "refuted")
    c2, s31 = interception.runc_in_gvisor({"gvisor-2022": by_build["gvisor-2022"]})
    assert (c2.status, s31.status) == ("inconclusive", "inconclusive") and "devices" in s31.reason


def test_runner_spec_selects_the_builds_a_notebook_runs():
    from k3snb.studies import runs

    assert runs.sandbox_specs("gvisor", ["2022", "2024"]) == ["gvisor:2022", "gvisor:2024"]
    assert runs.sandbox_specs("gvisor:2024", ["2022", "2024"]) == ["gvisor:2024"]  # --runsc 2024 is honoured
    assert runs.sandbox_specs("host", ["2022"]) == ["host"]
    # a platform-only spec (`k3snb run --matrix platform=ptrace`) keeps its platform in each build's spec
    assert runs.sandbox_specs("gvisor::ptrace", ["2022", "2024"]) == ["gvisor:2022:ptrace", "gvisor:2024:ptrace"]
    assert (runs.runsc_build("gvisor:2024"), runs.runsc_build("gvisor")) == ("2024", "2022")
    assert runs.runsc_build("gvisor", default="2024") == "2024"
    with pytest.raises(InvalidParameter):
        runs.sandbox_specs("gvisor:2023", ["2022"])
    # runc's log timestamps and the run's temp paths never reach a stored output
    err = ('time="2026-11-30T08:04:43Z" level=error msg="runc run failed" '
           "cat: can't open '/tmp/k3snb-gvisor-ab12/work/k3snb-exp24-cd34/fake/cap_last_cap'")
    assert runs._untemp(err) == "error: \"runc run failed\" cat: can't open '<target>/fake/cap_last_cap'"


@pytest.mark.parametrize("judge", [
    lambda k, r: [k3s.signature_seen("S11", "S11", k, r)], lambda k, r: [k3s.signature_cleared("S10", "S10", k, r, by="x")],
    lambda k, r: [k3s.api_ready("Exp 01", k, r, what="x")], lambda k, r: [k3s.native_worker(k, r)],
    lambda k, r: [k3s.ultimate(k, r)], lambda k, r: [k3s.hook_fatal(k, r)],
    lambda k, r: [k3s.stays_up("C9", k, r, claimed_s=900)], lambda k, r: k3s.manifests_and_pods(k, r),
    lambda k, r: k3s.local_storage_flag(k, r, r)], ids=lambda _: "k3s")
def test_every_k3s_check_is_not_testable_without_a_run(judge):
    assert {v.status for v in judge(NO_K3S, None)} == {"not-testable"}
    assert {v.status for v in judge(K3S, None)} == {"not-testable"}  # a binary, but no run recorded


# -- the environments each verdict speaks for (the report's claims × environments columns) -------------
def test_environment_verdicts_name_the_probed_builds():
    probes = {k: PROBES[k] for k in ("host", "gvisor-2022", "gvisor-2024")}
    assert environment.environment_claim("§1.2 9p root", probes).environments == ["gvisor-2022", "gvisor-2024"]
    v = environment.environment_claim("matrix cap_last_cap 2024", probes)  # a claim about one build
    assert (v.status, v.environments) == ("reproduced", ["gvisor-2024"])
    assert environment.environment_claim("S01", [PROBES["host"]]).environments is None  # not judged anywhere


def test_runc_verdicts_name_the_runners_of_their_cases():
    g24 = "gvisor-2024 (0.0~20240729.0, systrap)"  # as notebook 24 names a case's runner
    exp, c4 = interception.runc_init_reached({"host": case(), "g": case(g24, init_rw=0, cont_rw=0)})
    assert (exp.status, exp.environments) == ("refuted", ["host"])  # only the host case reached runc init
    exp, _ = interception.runc_init_reached({"host": case(init_rw=0, cont_rw=0), "g": case(g24, init_rw=0, cont_rw=0)})
    assert (exp.status, exp.environments) == ("reproduced", ["host", "gvisor-2024"])
    c2, s31 = interception.runc_in_gvisor({"gvisor-2022": {**case("gvisor-2022 (0.0~20221219.0, ptrace)",
                                           reached=False, stdout="")}, "gvisor-2024": {**case(g24, stdout="40")}})
    assert c2.environments == s31.environments == ["gvisor-2022", "gvisor-2024"]
    v = interception.redirect_enoent({"host (seed)": SEED, g24: {**SEED, "runner": g24}})
    assert (v.status, v.environments) == ("refuted", ["host", "gvisor-2024"])
    v = interception.preload_runc_init({**PRELOAD_CASE, "runner": g24})
    assert (v.status, v.environments) == ("refuted", ["gvisor-2024"])


def test_conclude_persists_the_environments(monkeypatch):
    from k3snb.experiments import _record

    monkeypatch.delenv("K3SNB_RESULTS", raising=False)
    _record.reset()
    probes = {k: PROBES[k] for k in ("host", "gvisor-2022", "gvisor-2024")}
    conclude("00-environment", environment.environment_claims(probes))
    stored = {v["claim"]: v for v in _record.results()["verdicts"]}
    _record.reset()
    assert stored["matrix cap_last_cap 2024"]["environments"] == ["gvisor-2024"]
    assert stored["§1.2 9p root"]["environments"] == ["gvisor-2022", "gvisor-2024"]


def test_verdict_environments_are_validated():
    from k3snb.experiments import _record
    from k3snb.studies._core import judged

    with pytest.raises(InvalidParameter, match="environments"):
        _record.verdict("C4", "not-testable", reason="x", environments="gvisor-2024")  # a str, not a list
    with pytest.raises(InvalidParameter, match="unknown runner"):
        judged("C4", "not-testable", {}, "x", environments=["nowhere"])


def test_env_labels_reads_specs_labels_and_reason_names():
    from k3snb.studies._core import env_labels

    assert env_labels(["gvisor:2024", "host", "gvisor-2022 (0.0~20221219.0, ptrace)", "gvisor 2024", "gvisor"]) == [
        "gvisor-2024", "host", "gvisor-2022"]
    # a runsc given by path: the build from the path when it says one, else "custom" (never a guessed build)
    assert env_labels(["gvisor:/var/cache/k3snb/runsc/20240729/runsc:ptrace", "/opt/runsc"]) == [
        "gvisor-2024", "gvisor-custom"]
