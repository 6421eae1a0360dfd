"""k3snb.studies.runtime: every status each verdict function can return, on hand-made evidence rows."""

from __future__ import annotations

from k3snb.studies import runtime as rt


def row(env="gvisor:2024", runtime="runc", via="direct", ran=True, stage=None, sig=None, err="",
        cgroups="cpu,cpuacct,cpuset,devices,memory,pids", refused="blkio,freezer", **kw):
    return {"env": env, "runtime": runtime, "via": via, "ran": ran, "stdout": "hello" if ran else "",
            "failed_stage": stage, "signature": sig, "error": err, "cgroups": cgroups, "cgroups_refused": refused,
            **kw}


FAIL = dict(ran=False, stage="container_created", sig="R03", err="runc run failed: mountpoint for devices not found")


def test_minimal_runc_runs():
    assert rt.minimal_runc_runs([row()]).status == "reproduced"
    assert rt.minimal_runc_runs([row(env="gvisor:2022", **FAIL)]).status == "refuted"
    v = rt.minimal_runc_runs([row(), row(env="gvisor:2022", **FAIL)])
    assert v.status == "inconclusive" and "disagree" in v.reason
    assert rt.minimal_runc_runs([row(env="host")]).status == "not-testable"  # host rows are not evidence


def test_runc_init_boundary():
    assert rt.runc_init_boundary([row(via="containerd")]).status == "refuted"
    assert rt.runc_init_boundary([row(via="containerd", ran=False, stage="runtime_init",
                                      err="can't get final child's PID")]).status == "reproduced"
    assert rt.runc_init_boundary([row(via="containerd", ran=False, stage="layer_unpacked",
                                      sig="R01")]).status == "inconclusive"
    assert rt.runc_init_boundary([row()]).status == "not-testable"


def test_cgroups_for_runc():
    probe = row(via="direct, no cgroups", ran=False, stage="container_created", sig="R02",
                err="no cgroup mount found in mountinfo")
    assert rt.cgroups_for_runc([probe, row(via="containerd")]).status == "reproduced"
    assert rt.cgroups_for_runc([row(via="direct, no cgroups"), row(via="containerd")]).status == "refuted"
    assert rt.cgroups_for_runc([probe, row(via="containerd", refused="blkio")]).status == "refuted"
    assert rt.cgroups_for_runc([probe, row(via="containerd", **FAIL)]).status == "refuted"
    assert rt.cgroups_for_runc([row(env="gvisor:2022", via="containerd")]).status == "not-testable"


def cfg(env="gvisor:2024", on=False, cri="ok", version="1.6.20~ds1", err=""):
    return {"env": env, "kernel": "4.4.0", "unprivileged_ports_icmp": on, "cri_plugin": cri, "containerd": version,
            "error": err}


ERR = "invalid plugin config: unprivileged_icmp and unprivileged_port require kernel version greater than or equal to 4.11"


def test_standalone_boots():
    assert rt.standalone_boots([cfg()]).status == "reproduced"
    assert rt.standalone_boots([cfg(cri="containerd failed", err="socket not up")]).status == "refuted"
    assert rt.standalone_boots([cfg(env="host")]).status == "not-testable"


def test_unprivileged_kernel_check():
    assert rt.unprivileged_kernel_check([cfg(on=True), cfg()]).status == "not-testable"
    assert rt.unprivileged_kernel_check([cfg(on=True, cri="error", err=ERR), cfg()]).status == "refuted"
    assert rt.unprivileged_kernel_check([cfg(on=True, cri="error", err=ERR),
                                         cfg(cri="error", err=ERR)]).status == "reproduced"
    assert rt.unprivileged_kernel_check([cfg()]).status == "not-testable"


def test_patched_containerd_needed():
    v = rt.patched_containerd_needed([cfg(on=True), cfg()])
    assert v.status == "not-testable" and "1.6.20" in v.reason
    assert rt.patched_containerd_needed([cfg(on=True, version="2.1.4"), cfg(version="2.1.4")]).status == "refuted"
    assert rt.patched_containerd_needed([cfg(on=True, version="2.1.4", cri="error", err=ERR),
                                         cfg(version="2.1.4", cri="error", err=ERR)]).status == "reproduced"


def snap(env="gvisor:2024", where="workdir", sn="native", ran=True, stage=None, sig=None, **kw):
    return {"env": env, "state_on": where, "state_fs": "v9fs" if where == "workdir" else "tmpfs", "snapshotter": sn,
            "ran": ran, "failed_stage": stage, "error": "" if ran else "failed to mount", "signature": sig, **kw}


def test_native_snapshotter_bypass():
    ovl_fail = snap(sn="overlayfs", ran=False, stage="container_created", sig="R08")
    assert rt.native_snapshotter_bypass([snap(), ovl_fail]).status == "reproduced"
    unpack = dict(ran=False, stage="layer_unpacked", sig="R01")
    assert rt.native_snapshotter_bypass([snap(**unpack), snap(sn="overlayfs", **unpack)]).status == "refuted"
    assert rt.native_snapshotter_bypass([snap(), snap(sn="overlayfs")]).status == "inconclusive"
    assert rt.native_snapshotter_bypass([snap(env="host")]).status == "not-testable"


def ovl(env="gvisor:2024", lower="workdir", upper="tmpfs", ok=True):
    return {"env": env, "lower_on": lower, "upper_on": upper, "lower_fs": "v9fs", "mounted": ok, "read_lower": ok,
            "wrote_upper": ok, "error": "" if ok else "mount: /tmp/ovl-m: wrong fs type, bad option"}


def test_overlay_on_9p():
    s12, s13 = rt.overlay_on_9p([ovl(), ovl(upper="workdir", ok=False)], [])
    assert (s12.status, s13.status) == ("reproduced", "refuted")
    s12, s13 = rt.overlay_on_9p([ovl(ok=False), ovl(upper="workdir")], [snap(sn="overlayfs")])
    assert (s12.status, s13.status) == ("refuted", "reproduced")
    ovl_fail = snap(sn="overlayfs", ran=False, stage="container_created", sig="R08")
    s12, _ = rt.overlay_on_9p([ovl()], [snap(), ovl_fail])
    assert s12.status == "reproduced"
    # both snapshotters fail the same way (2022 unpack): no evidence about overlay, mount(8) decides
    unpack = dict(ran=False, stage="layer_unpacked", sig="R01")
    s12, _ = rt.overlay_on_9p([ovl(), ovl(upper="workdir")], [snap(**unpack), snap(sn="overlayfs", **unpack)])
    assert s12.status == "refuted"
    s12, s13 = rt.overlay_on_9p([ovl(env="host")], [])
    assert (s12.status, s13.status) == ("not-testable", "not-testable")


def test_unpack_in_2022():
    unpack = dict(ran=False, stage="layer_unpacked", sig="R01")
    rows = [snap(env="gvisor:2022", where="tmpfs", **unpack), snap(env="gvisor:2022", where="tmpfs", sn="overlayfs",
                                                                   **unpack)]
    assert rt.unpack_in_2022(rows).status == "reproduced"
    assert rt.unpack_in_2022([snap(env="gvisor:2022", where="tmpfs")]).status == "refuted"
    assert rt.unpack_in_2022([snap()]).status == "not-testable"


def ns(case, ran=True, runtime="runc", env="gvisor:2024", sig=None, cgroup_ns=False, **kw):
    return {"env": env, "runtime": runtime, "case": case, "ran": ran, "cgroup_ns": cgroup_ns if ran else None,
            "failed_stage": None if ran else "container_created", "signature": sig, "error": "" if ran else "x", **kw}


CASES = ["1 minimal", "2 +network", "3 +user", "4 +cgroup ns", "5 capabilities", "6 k3s-like", "7 caps + cgroup ns"]


def test_namespace_progression():
    research = [ns(c) if c not in rt.EXP26_FAILS else ns(c, ran=False, sig="S33") for c in CASES]
    e26, s33 = rt.namespace_progression(research + [ns("4 +cgroup ns", runtime="crun")])
    assert (e26.status, s33.status) == ("reproduced", "reproduced") and "no cgroup namespace" in e26.reason
    e26, s33 = rt.namespace_progression([ns(c, cgroup_ns=True) for c in CASES])
    assert (e26.status, s33.status) == ("refuted", "refuted")
    e26, s33 = rt.namespace_progression([ns(c, ran=False, sig="R03") for c in CASES])
    assert (e26.status, s33.status) == ("inconclusive", "inconclusive")
    e26, s33 = rt.namespace_progression([ns(c, env="host") for c in CASES])
    assert (e26.status, s33.status) == ("not-testable", "not-testable")


def cap(variant, ran=True, key="40", env="gvisor:2024", sig=None):
    return {"env": env, "runc": "1.1.5", "key": key, "variant": variant, "ran": ran, "cap_eff": "a80405fb" if ran else "",
            "reads": "runc:ENOENT" if "hidden" in variant else "runc:ok", "failed_stage": None if ran else "container_created",
            "signature": sig, "error": "" if ran else "x"}


def test_cap_last_cap_patch():
    v = rt.cap_last_cap_patch([cap("as is"), cap("key hidden (ENOENT)"), cap("key faked to 40")])
    assert v.status == "refuted" and "still runs" in v.reason
    v = rt.cap_last_cap_patch([cap("as is", ran=False, key="absent", sig="S31"), cap("key faked to 40", key="absent")])
    assert v.status == "reproduced"
    v = rt.cap_last_cap_patch([cap("as is", ran=False, key="absent", sig="R03"), cap("key faked to 40", ran=False,
                                                                                    sig="R03")])
    assert v.status == "inconclusive"
    assert rt.cap_last_cap_patch([cap("as is", env="host")]).status == "not-testable"


# -- the environments each verdict speaks for (the report's claims × environments columns) -------------
def test_verdicts_name_the_builds_they_rest_on():
    both = [row(), row(env="gvisor:2022", **FAIL), row(env="host")]
    assert rt.minimal_runc_runs(both).environments == ["gvisor-2022", "gvisor-2024"]  # the host is context
    assert rt.minimal_runc_runs([row()]).environments == ["gvisor-2024"]
    assert rt.minimal_runc_runs([row(env="host")]).environments is None  # nothing judged: the run's runner
    assert rt.runc_init_boundary([row(via="containerd", env="gvisor:2022")]).environments == ["gvisor-2022"]
    probe = row(via="direct, no cgroups", ran=False, stage="container_created", sig="R02",
                err="no cgroup mount found in mountinfo")
    v = rt.cgroups_for_runc([probe, row(via="containerd"), row(env="gvisor:2022", via="containerd")])
    assert (v.status, v.environments) == ("reproduced", ["gvisor-2024"])  # a claim about runsc 2024 only
    assert rt.standalone_boots([cfg(), cfg(env="gvisor:2022")]).environments == ["gvisor-2022", "gvisor-2024"]
    assert rt.unprivileged_kernel_check([cfg(on=True), cfg()]).environments == ["gvisor-2024"]
    assert rt.patched_containerd_needed([cfg(on=True), cfg()]).environments == ["gvisor-2024"]
    ovl_fail = snap(sn="overlayfs", ran=False, stage="container_created", sig="R08")
    assert rt.native_snapshotter_bypass([snap(), ovl_fail]).environments == ["gvisor-2024"]
    s12, s13 = rt.overlay_on_9p([ovl(), ovl(env="gvisor:2022", ok=False)], [])
    assert s13.environments == ["gvisor-2022", "gvisor-2024"]
    unpack = dict(ran=False, stage="layer_unpacked", sig="R01")
    v = rt.unpack_in_2022([snap(env="gvisor:2022", where="tmpfs", **unpack), snap(**unpack)])
    assert v.environments == ["gvisor-2022"]
    e26, s33 = rt.namespace_progression([ns(c, env=e) for c in CASES for e in ("gvisor:2022", "gvisor:2024")])
    assert e26.environments == s33.environments == ["gvisor-2022", "gvisor-2024"]
    assert rt.cap_last_cap_patch([cap("as is", env="gvisor:2022")]).environments == ["gvisor-2022"]


# -- the reasons name the versions the rows measured, never assumed ones (checklist 4 and 7) ------------
def test_reasons_name_the_measured_versions_or_say_none_was_recorded():
    probe = row(via="direct, no cgroups", ran=False, stage="container_created", sig="R02",
                err="no cgroup mount found in mountinfo", runtime_version="1.1.12")
    ctd = row(via="containerd", runtime_version="1.1.12", containerd="1.7.3")
    v = rt.cgroups_for_runc([probe, ctd])
    assert v.status == "reproduced" and "runc 1.1.12" in v.reason and "containerd 1.7.3" in v.reason
    assert "1.1:" not in v.reason and "1.6" not in v.reason  # no version the rows did not measure
    v = rt.cgroups_for_runc([probe, row(via="containerd", **FAIL)])  # a row without versions (old evidence)
    assert v.status == "refuted" and "runc 1.1.12 / runc (version not recorded)" in v.reason
    assert "containerd (version not recorded)" in v.reason

    unpack = dict(ran=False, stage="layer_unpacked", sig="R01")
    rows = [snap(env="gvisor:2022", where="tmpfs", containerd="1.6.20~ds1", **unpack),
            snap(env="gvisor:2022", where="tmpfs", sn="overlayfs", containerd="1.6.20~ds1", **unpack)]
    v = rt.unpack_in_2022(rows)
    assert v.status == "reproduced" and v.reason.startswith("runsc 2022, containerd 1.6.20~ds1: ")
    v = rt.unpack_in_2022([snap(env="gvisor:2022", where="tmpfs", **unpack)])
    assert v.reason.startswith("runsc 2022, containerd (version not recorded): ")

    assert "runc 1.1.5+ds1 ran busybox" in rt.minimal_runc_runs([row(runtime_version="1.1.5+ds1")]).reason
    assert "runc (version not recorded)" in rt.minimal_runc_runs([row()]).reason
    v = rt.runc_init_boundary([row(via="containerd", runtime_version="1.1.5+ds1", containerd="1.6.20~ds1")])
    assert v.reason.startswith("gvisor:2024: containerd 1.6.20~ds1 + runc 1.1.5+ds1 ran the container")
    v = rt.patched_containerd_needed([cfg(on=True, version=None), cfg(version=None)])
    assert v.status == "not-testable" and "containerd (version not recorded) (not 2.x)" in v.reason
    research = [ns(c, runtime_version="1.1.5+ds1") if c not in rt.EXP26_FAILS
                else ns(c, ran=False, sig="S33", runtime_version="1.1.5+ds1") for c in CASES]
    e26, s33 = rt.namespace_progression(research + [ns("4 +cgroup ns", runtime="crun", runtime_version="1.8.1")])
    assert e26.reason.startswith("gvisor:2024: runc 1.1.5+ds1: 1, 2, 3, 5 run") and "; crun 1.8.1 runs config 4" in e26.reason
    assert "every runc 1.1.5+ds1 config with a cgroup namespace fails with S33" in s33.reason
    e26, _ = rt.namespace_progression([ns(c, ran=False, sig="R03") for c in CASES])  # rows without versions
    assert "runc (version not recorded): the minimal config fails" in e26.reason
