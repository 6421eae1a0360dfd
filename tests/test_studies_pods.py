"""Verdict logic of notebook 32 (k3snb.studies.pods): every status each function can return."""

from __future__ import annotations

import pytest

from k3snb.studies import pods as sp

ALL = ["cni-link", "cgroup-v1-only", "pid-node"]


def row(env="gvisor-2024", runtime="runc", cni="bridge", label=None, passed=(), failed=None, sig=None,
        share_pid=False, allowed=ALL, workarounds=(), refusing=None, versions=None):
    # versions: what pods.study.attempt records, as read inside the runner (absent here unless given)
    versions = versions or {}
    return {"env": env, "runtime": runtime, "cni": cni, "label": label, "share_pid": share_pid,
            "passed": list(passed), "failed_stage": failed, "signature": sig, "workarounds_allowed": list(allowed),
            "workarounds": list(workarounds), "refusing": refusing,
            "runtime_version": versions.get(runtime), "containerd": versions.get("containerd")}


RUNTIME = ["runner", "cgroups", "probes", "network", "containerd", "images"]
FULL = RUNTIME + ["sandbox", "running", "logs", "exec", "reach"]
G22 = row(env="gvisor-2022", passed=RUNTIME[:-1], failed="images", sig="R01")
G24_OK = row(passed=FULL, workarounds=["cni-link", "pid-node"])
G24_NOEXEC = row(passed=FULL[:-2], failed="exec", sig="N02")
G24_CRUN = row(runtime="crun", passed=RUNTIME, failed="sandbox", sig="R05")
HOST = row(env="host", passed=FULL)


def test_exp32_statuses() -> None:
    v = sp.judge_exp32([G22, G24_OK, HOST])
    assert v.status == "reproduced" and "gvisor-2024" in v.reason and "gvisor-2022" in v.reason
    assert "gvisor-2024/runc/bridge.furthest" in v.evidence
    assert sp.judge_exp32([G22, G24_CRUN]).status == "refuted"
    assert sp.judge_exp32([HOST]).status == "not-testable"
    # research variants (labelled rows) are not the kit's way: they alone cannot reproduce it
    assert sp.judge_exp32([row(label="own-pid", passed=FULL[:-2])]).status == "not-testable"


# -- the versions a reason names are the ones the rows recorded, never assumed ---------------------------
V24 = {"containerd": "1.6.20~ds1", "runc": "1.1.5+ds1", "crun": "1.8.1"}
V_OTHER = {"containerd": "1.7.0", "runc": "1.2.0"}


def test_exp32_and_c1_name_the_recorded_versions() -> None:
    ok = row(passed=FULL, workarounds=["cni-link", "pid-node"], versions=V24)
    crun = row(runtime="crun", passed=FULL, versions=V24)
    g22 = row(env="gvisor-2022", passed=RUNTIME[:-1], failed="images", sig="R01", versions=V24)
    for v in (sp.judge_exp32([g22, ok, crun]), sp.judge_c1([g22, ok, crun])):
        assert "containerd 1.6.20~ds1 + crun 1.8.1 / runc 1.1.5+ds1" in v.reason, v.reason
        assert "1.6 +" not in v.reason and "runc 1.1," not in v.reason  # no hard-coded versions
        assert v.evidence["gvisor-2024/runc/bridge.runtime_version"] == "1.1.5+ds1"
        assert v.evidence["gvisor-2024/crun/bridge.containerd"] == "1.6.20~ds1"
    # other versions recorded -> those are named; a refuted verdict names them in its scope too
    v = sp.judge_exp32([row(passed=RUNTIME, failed="sandbox", sig="S29", versions=V_OTHER)])
    assert v.status == "refuted" and "stock containerd 1.7.0 + runc 1.2.0," in v.reason
    # rows from several runs: each recorded version once, recorded ones first
    v = sp.judge_exp32([ok, row(env="gvisor-2022", passed=FULL, versions=V_OTHER), G22])
    assert "containerd 1.6.20~ds1 / containerd 1.7.0 / containerd (version not recorded)" in v.reason


def test_reasons_say_version_not_recorded_when_rows_lack_it() -> None:
    # e.g. rows recorded before versions were read, or containerd never came up
    v = sp.judge_exp32([G22, G24_OK])
    assert v.status == "reproduced"
    assert "stock containerd (version not recorded) + runc (version not recorded)," in v.reason
    assert "pods run in gvisor-2024 (containerd (version not recorded) + runc (version not recorded))" in \
        sp.judge_c1([G24_OK]).reason
    no_pid = [w for w in ALL if w != "pid-node"]
    own = row(label="own-pid", allowed=no_pid, passed=RUNTIME + ["sandbox", "running", "logs"])
    for versions, named in ((None, "runc (version not recorded) nsexec"), (V24, "runc 1.1.5+ds1 nsexec")):
        shared = row(label="shared-pid", share_pid=True, allowed=no_pid, passed=RUNTIME + ["sandbox"],
                     failed="running", sig="N03", versions=versions)
        v = sp.judge_shared_pid([shared, own])
        assert v.status == "reproduced" and named in v.reason, v.reason
        assert v.evidence["gvisor-2024/runc/bridge/shared-pid.runtime_version"] == (versions or {}).get("runc")


def test_c1_statuses() -> None:
    assert sp.judge_c1([G22, G24_OK]).status == "reproduced"
    assert sp.judge_c1([G22, G24_CRUN]).status == "refuted"
    assert sp.judge_c1([G22, G24_NOEXEC]).status == "inconclusive"
    assert sp.judge_c1([]).status == "not-testable"


def test_shared_pid_statuses() -> None:
    no_pid = [w for w in ALL if w != "pid-node"]
    shared_fail = row(label="shared-pid", share_pid=True, allowed=no_pid, passed=RUNTIME + ["sandbox"],
                      failed="running", sig="N03")
    own_runs = row(label="own-pid", allowed=no_pid, passed=RUNTIME + ["sandbox", "running", "logs"], failed="exec",
                   sig="N02")
    v = sp.judge_shared_pid([shared_fail, own_runs])
    assert v.status == "reproduced" and "own PID namespace" in v.reason
    shared_runs = dict(shared_fail, passed=FULL, failed_stage=None, signature=None)
    assert sp.judge_shared_pid([shared_runs, own_runs]).status == "refuted"
    own_fails = dict(own_runs, passed=RUNTIME + ["sandbox"], failed_stage="running", signature="N03")
    assert sp.judge_shared_pid([shared_fail, own_fails]).status == "refuted"
    other = dict(shared_fail, signature="R05")
    assert sp.judge_shared_pid([other, own_runs]).status == "inconclusive"
    assert sp.judge_shared_pid([own_runs]).status == "not-testable"
    # rows run with the pid-node workaround do not count for this claim
    assert sp.judge_shared_pid([dict(shared_fail, workarounds_allowed=ALL), own_runs]).status == "not-testable"


@pytest.mark.parametrize("judge,cni,sig", [(sp.judge_bridge, "bridge", "S29"), (sp.judge_ptp, "ptp", "N04"),
                                           (sp.judge_eth0, "loopback", "N05")])
def test_cni_plugin_statuses(judge, cni, sig) -> None:
    failing = row(cni=cni, label="stock", passed=RUNTIME, failed="sandbox", sig=sig, refusing="X")
    v = judge([failing])
    assert v.status == "reproduced" and "refusing operation: X" in v.reason
    assert judge([dict(failing, passed=RUNTIME + ["sandbox"], failed_stage="running", signature="N03")]).status == "refuted"
    assert judge([dict(failing, signature="G01")]).status == "inconclusive"
    assert judge([row(env="gvisor-2022", cni=cni, passed=RUNTIME[:-1], failed="images", sig="R01")]).status == \
        "not-testable"
    # the kit's link-mode plugin is not the stock plugin: its row does not judge the claim
    assert judge([row(cni=cni, passed=FULL, workarounds=["cni-link"])]).status == "not-testable"


def test_verdicts_cover_the_registry_claims() -> None:
    from k3snb.experiments._registry import load_registry

    vs = sp.verdicts([G22, G24_OK])
    assert [v.claim for v in vs] == list(load_registry()["32-pods-in-gvisor"].claims)


def links(env, fail=(), out="RTNETLINK answers: Operation not supported", http=True):
    steps = [*sp.LINK_OPS, "route_del", "http_over_bridge"]
    return [{"env": env, "step": s, "ok": s not in fail and (s != "http_over_bridge" or http),
             "output": out if s in fail else ""} for s in steps]


def test_exp20_statuses() -> None:
    v = sp.judge_exp20(links("gvisor-2024") + links("gvisor-2022", fail=sp.LINK_OPS))
    assert v.status == "reproduced" and "HTTP" in v.reason and "gvisor-2022 fails" in v.reason
    assert sp.judge_exp20(links("gvisor-2022", fail=sp.LINK_OPS)).status == "refuted"
    assert sp.judge_exp20(links("host")).status == "not-testable"


def test_links_statuses() -> None:
    three = ("veth_add", "bridge_add", "netns_add")
    ok24, bad22 = links("gvisor-2024"), links("gvisor-2022", fail=three, out='Command "add" is unknown')
    assert sp.judge_links(ok24 + bad22).status == "reproduced"
    assert sp.judge_links(ok24 + links("gvisor-2022")).status == "inconclusive"
    assert sp.judge_links(links("gvisor-2024", fail=three) + links("gvisor-2022", fail=("veth_add",))).status == \
        "refuted"
    assert sp.judge_links(ok24).status == "not-testable"


def test_exp23_statuses() -> None:
    fake_ok = row(cni="fake", passed=FULL[:-1])
    assert sp.judge_exp23([fake_ok]).status == "reproduced"
    assert sp.judge_exp23([row(cni="fake", passed=RUNTIME, failed="sandbox", sig="N05")]).status == "refuted"
    assert sp.judge_exp23([row(env="gvisor-2022", cni="fake", passed=RUNTIME[:-1], failed="images")]).status == \
        "inconclusive"
    assert sp.judge_exp23([G24_OK]).status == "not-testable"


def cni(env, step, ok, out=""):
    return {"env": env, "step": step, "ok": ok, "output": out}


@pytest.mark.parametrize("judge,step,needle", [
    (sp.judge_s28, "bridge_promisc", 'could not set promiscuous mode on "x": invalid argument'),
    (sp.judge_s29, "bridge", '"x" already exists but is not a bridge'),
    (sp.judge_s30, "ptp", "failed to add route {Ifindex: 2}: operation not supported")])
def test_cni_signature_claims(judge, step, needle) -> None:
    g22 = cni("gvisor-2022", step, False, 'could not add "x": protocol not available')
    assert judge([cni("gvisor-2024", step, False, needle), g22]).status == "reproduced"
    assert judge([cni("gvisor-2024", step, True), g22]).status == "refuted"
    assert judge([g22]).status == "inconclusive"
    assert judge([cni("host", step, True)]).status == "not-testable"


def test_s30_refuted_when_ptp_fails_deleting_not_adding() -> None:
    rows = [cni("gvisor-2024", "ptp", False, "failed to delete route {Ifindex: 2}: operation not supported")]
    v = sp.judge_s30(rows)
    assert v.status == "refuted" and "RTM_DELROUTE" in v.reason


def pm(env, **steps):
    base = {"netlink_subscribe": (True, ""), "info": (True, "runc vfs cni"), "load": (True, ""),
            "run_none": (True, "hi"), "run_host": (True, "hi"),
            "run_bridge": (False, '"cni-podman0" already exists but is not a bridge')}
    base.update(steps)
    return [{"env": env, "step": s, "ok": ok, "output": out} for s, (ok, out) in base.items()]


def test_exp19_statuses() -> None:
    assert sp.judge_exp19(pm("gvisor-2024")).status == "reproduced"
    assert sp.judge_exp19(pm("gvisor-2024", run_bridge=(True, "hi"))).status == "refuted"
    assert sp.judge_exp19(pm("gvisor-2022", load=(False, "remount /: invalid argument"))).status == "inconclusive"
    assert sp.judge_exp19(pm("host")).status == "not-testable"


def test_s26_statuses() -> None:
    assert sp.judge_s26(pm("gvisor-2024", run_bridge=(False, "netavark: invalid version number"))).status == \
        "reproduced"
    assert sp.judge_s26(pm("gvisor-2024")).status == "refuted"
    assert sp.judge_s26(pm("gvisor-2022", info=(False, "boom"), run_none=(False, "x"))).status == "inconclusive"
    assert sp.judge_s26([]).status == "not-testable"


def test_s24_statuses() -> None:
    denied = (False, "PermissionError: [Errno 13] Permission denied")
    assert sp.judge_s24(pm("gvisor-2024", netlink_subscribe=denied)).status == "reproduced"
    assert sp.judge_s24(pm("gvisor-2024")).status == "refuted"
    assert sp.judge_s24(pm("gvisor-2024", netlink_subscribe=(False, "OSError: [Errno 22]"))).status == "inconclusive"
    assert sp.judge_s24(pm("host")).status == "not-testable"


# -- the environments each verdict speaks for (the report's claims × environments columns) -------------
def test_pod_verdicts_name_the_builds_they_rest_on() -> None:
    v = sp.judge_exp32([G22, G24_OK, HOST])
    assert (v.status, v.environments) == ("reproduced", ["gvisor-2024"])  # where a pod ran; the host is context
    assert sp.judge_exp32([G22, G24_CRUN]).environments == ["gvisor-2022", "gvisor-2024"]
    assert sp.judge_c1([G22, G24_NOEXEC]).environments == ["gvisor-2022", "gvisor-2024"]
    no_pid = [w for w in ALL if w != "pid-node"]
    shared = row(label="shared-pid", share_pid=True, allowed=no_pid, passed=RUNTIME + ["sandbox"], failed="running",
                 sig="N03")
    own = row(label="own-pid", allowed=no_pid, passed=RUNTIME + ["sandbox", "running", "logs"])
    assert sp.judge_shared_pid([shared, own]).environments == ["gvisor-2024"]
    stock = row(cni="ptp", label="stock", passed=RUNTIME, failed="sandbox", sig="N04")
    assert sp.judge_ptp([G22, stock]).environments == ["gvisor-2024"]
