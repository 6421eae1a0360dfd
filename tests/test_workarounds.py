"""Workarounds: catalogue/metadata consistency, then apply → check → revert for real in the Host
runner (private mount namespace, root) and in a gVisor sandbox (runsc 2022, full caps), with the
host's own mount table compared before and after."""

from __future__ import annotations

import re

import pytest

import k3snb
from k3snb.errors import InvalidParameter, UsageError, WorkaroundFailed
from k3snb.workarounds import LaunchPlan, Workaround, _ops, get_workaround, ids, list_workarounds
from k3snb.workarounds._base import metadata, research_only

RUNNER_WORKAROUNDS = sorted(w for w, m in metadata().items() if m["kind"] == "runner")
FLAG_WORKAROUNDS = sorted(w for w, m in metadata().items() if m["kind"] == "flag")


def _host_mounts() -> list[str]:
    # mount ids and propagation peer numbers may be reused; compare mountpoint, fs, source, options
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            p = left.split()
            out.append(f"{p[4]} {p[5]} {' '.join(x.split(':')[0] for x in p[6:])} - {right.strip()}")
    return sorted(out)


# -- catalogue ---------------------------------------------------------------------------------
def test_catalogue_covers_every_research_workaround():
    implemented = {w for m in metadata().values() for w in m.get("research", [])}
    research = {f"W{i}" for i in range(1, 49)}
    assert research <= implemented | set(research_only()), sorted(research - implemented - set(research_only()))
    assert not implemented & set(research_only()), "an id is both implemented and research-only"


def test_metadata_fields_and_classes():
    sig_ids = list(k3snb.list_signatures().to_frame()["id"])
    assert set(ids()) == set(metadata())
    for wid, m in metadata().items():
        assert {"id", "title", "kind", "research", "signatures", "description"} <= set(m), wid
        assert m["kind"] in ("runner", "flag")
        assert all(re.fullmatch(r"W\d+", w) for w in m["research"]), wid
        assert all(re.fullmatch(r"S\d+[a-z]?", s) for s in m["signatures"]), wid
        for s in m["signatures"]:
            assert any(x.startswith(s) for x in sig_ids), f"{wid}: signature {s} not in the classifier"
        w = get_workaround(wid)
        assert isinstance(w, Workaround) and w.id == wid
        if m["kind"] == "flag":
            assert w.flags() and all(f.startswith("--") for f in w.flags())


def test_table_and_lookup_by_research_id():
    t = list_workarounds()
    assert len(t) == len(metadata())
    df = t.to_frame()
    assert {"id", "title", "kind", "research", "signatures", "flags"} <= set(df.columns)
    assert "<table" in t._repr_html_()
    assert len(list_workarounds(include_research_only=True)) == len(metadata()) + len(research_only())
    assert get_workaround("W1").id == "kmsg"
    assert get_workaround("w17").id == "local-storage-capacity-isolation"


def test_unknown_workaround_lists_valid_ids():
    with pytest.raises(UsageError) as e:
        k3snb.get_workaround("kmsgg")
    msg = str(e.value)
    assert "kmsgg" in msg and "kmsg" in msg and "propagation" in msg and e.value.hint
    with pytest.raises(UsageError, match="research-only"):
        get_workaround("W14")
    with pytest.raises(InvalidParameter, match="no parameter"):
        get_workaround("kmsg", nope=1)


def test_plan_wraps_in_order_and_builds_path():
    plan = LaunchPlan(data_dir="/d", work_dir="/w", path_prepend=["/a"], wrappers=[["inner", "--"], ["outer"]])
    assert plan.command(["k3s", "server"]) == ["outer", "inner", "--", "k3s", "server"]
    assert plan.environment("/usr/bin")["PATH"] == "/a:/usr/bin"


# -- runners -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host_runner():
    from k3snb import _capabilities as cap

    if not cap.is_root():
        pytest.skip("needs root")
    from k3snb.runners.host import Host

    with Host() as h:
        yield h


@pytest.fixture(scope="module")
def gvisor_runner():
    from k3snb import _capabilities as cap

    if not (cap.is_root() and cap.has_runsc()):
        pytest.skip("needs root and runsc")
    from k3snb.runners.gvisor import GVisor

    with GVisor("2022", net_raw=True) as g:
        yield g


def _cycle(runner, wid: str, **params) -> dict:
    w = get_workaround(wid, **params)
    plan = LaunchPlan(data_dir=str(runner.workdir / "k3s-data"), work_dir=str(runner.workdir / "wa"))
    a = w.apply(runner, plan)
    assert a.ok and w.applied
    c = w.verify(runner)
    assert c.ok, (wid, c.detail)
    r = w.revert(runner)
    assert r.ok, (wid, r.detail)
    after = w.verify(runner)
    assert not after.ok, (wid, "still in effect after revert", after.detail)
    return {"apply": a, "verify": c, "revert": r, "plan": plan, "w": w}


@pytest.mark.root
@pytest.mark.parametrize("wid", RUNNER_WORKAROUNDS)
def test_runner_workaround_cycle_in_host(host_runner, wid):
    before = _host_mounts()
    out = _cycle(host_runner, wid)
    assert _host_mounts() == before, "the host's mount table changed"
    if wid == "propagation":
        assert out["apply"].detail["mode"] == "rshared"  # the host kernel allows it on / of the private ns
    if wid == "iptables-legacy":
        assert "legacy" in out["verify"].detail["version"]


GVISOR_EXPECTED_FAIL = {"fake-diskstats": "does not exist"}  # /proc/diskstats is absent in gVisor (W18)


@pytest.mark.root
@pytest.mark.runsc
@pytest.mark.parametrize("wid", RUNNER_WORKAROUNDS)
def test_runner_workaround_cycle_in_gvisor(gvisor_runner, wid):
    before = _host_mounts()
    if wid in GVISOR_EXPECTED_FAIL:
        w = get_workaround(wid)
        with pytest.raises(WorkaroundFailed, match=GVISOR_EXPECTED_FAIL[wid]) as e:
            w.apply(gvisor_runner)
        assert "fake-procsys" in e.value.hint and not w.applied
        return
    out = _cycle(gvisor_runner, wid)
    assert _host_mounts() == before
    if wid == "propagation":
        # MS_REC|MS_SHARED on / is EINVAL in gVisor; the data-dir submount is made shared instead
        assert out["apply"].detail["mode"] == "shared-submount"
        assert out["apply"].detail["first_attempt"]["errno"] == "EINVAL"
    if wid == "cgroup-v1":
        rows = out["verify"].detail["controllers"]
        assert set(rows) == {"cpu", "cpuacct", "cpuset", "memory", "pids"}
        assert all(r["f_type"] == "0x27e0eb" for r in rows.values())
    if wid == "kmsg":
        assert out["apply"].detail["created"] is True  # gVisor has no /dev/kmsg of its own
    if wid == "fake-procsys":
        checked = {k: v for k, v in out["verify"].detail.items() if k.startswith("/proc/sys/")}
        assert "/proc/sys/kernel/panic" in checked  # missing in gVisor, read through the interceptor


@pytest.mark.root
@pytest.mark.runsc
def test_cgroup_unsupported_controller_fails_cleanly_in_gvisor(gvisor_runner):
    w = get_workaround("cgroup-v1", controllers=("cpu", "devices"))
    before = gvisor_runner.run_python(_ops.mountpoints)
    with pytest.raises(WorkaroundFailed, match="devices"):
        w.apply(gvisor_runner)
    assert gvisor_runner.run_python(_ops.mountpoints) == before  # partial mounts rolled back


@pytest.mark.root
@pytest.mark.runsc
def test_fake_tmpfs_cgroup_layout_is_not_cgroupfs(gvisor_runner):
    out = _cycle(gvisor_runner, "cgroup-v1", layout="fake-tmpfs")
    rows = out["verify"].detail["controllers"]
    assert all(r["f_type"] == "0x1021994" for r in rows.values())  # tmpfs: what runc rejects (S21)


@pytest.mark.root
@pytest.mark.parametrize("wid", FLAG_WORKAROUNDS)
def test_flag_workarounds_edit_the_plan(host_runner, wid):
    out = _cycle(host_runner, wid)
    w, plan = out["w"], out["plan"]
    assert not set(w.flags()) & set(plan.flags)  # revert removed them
    w.apply(host_runner, plan)
    assert set(w.flags()) <= set(plan.flags)
