"""k3snb.studies.cgroupfs: every status each verdict function can return, on recorded-shape evidence rows
(no root, nothing started)."""

from __future__ import annotations

from k3snb.studies import cgroupfs as cs

V = {"runc": "runc version 1.1.5+ds1", "crun": "crun version 1.8.1"}
NOTCG = ("runc run failed: unable to start container process: unable to apply cgroup configuration: failed to "
         "write <pid>: open /sys/fs/cgroup/memory/<cgroup>/cgroup.procs: not a cgroup file")
R03 = dict(ran=False, failed_stage="container_created", signature="R03",
           error="runc run failed: mountpoint for devices not found")


def run(env="gvisor:2024", runtime="runc", fake=False, openat2="ENOSYS", ran=True, **kw):
    base = {"env": env, "runtime": runtime, "cgroup_dir": "memory on tmpfs (faker files)" if fake else "real cgroupfs",
            "file_fs": "tmpfs" if fake else "cgroup", "openat2": openat2, "ran": ran, "failed_stage": None,
            "signature": None, "error": ""}
    return {**base, **kw}


def rejected(env="gvisor:2024", openat2="ENOSYS"):
    return run(env, fake=True, openat2=openat2, ran=False, failed_stage="container_created", signature="S21",
               error=NOTCG)


def pair(env="gvisor:2024", fake_row=None, openat2="ENOSYS"):
    return [run(env, openat2=openat2), fake_row or rejected(env, openat2)]


def test_faker_beats_runc_every_status():
    v = cs.faker_beats_runc(pair() + [run(runtime="crun", fake=True)], V)
    assert v.status == "reproduced" and "crun runs with the same fake files" in v.reason
    assert "runc version 1.1.5" in v.reason and v.evidence
    assert cs.faker_beats_runc(pair(fake_row=run(fake=True)), V).status == "refuted"
    other = run(fake=True, ran=False, failed_stage="container_created", signature="S20",
                error="open …/cgroup.procs: no such file or directory")
    assert cs.faker_beats_runc(pair(fake_row=other), V).status == "inconclusive"
    # a build where runc never runs cannot test it; it does not decide when another build can
    broken = [run("gvisor:2022", **R03), run("gvisor:2022", fake=True, **R03)]
    assert cs.faker_beats_runc(broken, V).status == "not-testable"
    mixed = cs.faker_beats_runc(broken + pair(), V)
    assert mixed.status == "reproduced" and "gvisor:2022: runc does not run" in mixed.reason
    disagree = cs.faker_beats_runc(pair() + pair("gvisor:2022", fake_row=run("gvisor:2022", fake=True)), V)
    assert disagree.status == "inconclusive" and "disagree" in disagree.reason
    assert cs.faker_beats_runc(pair("host", run("host", fake=True, openat2="yes"), "yes"), V).status == "not-testable"


def test_runc_fstatfs_check_every_status():
    host = pair("host", run("host", fake=True, openat2="yes"), "yes")
    v = cs.runc_fstatfs_check(host + pair(), V)
    assert v.status == "reproduced" and "host (openat2 yes): tmpfs cgroup.procs accepted" in v.reason
    # accepted without openat2: the check did not apply where it should
    assert cs.runc_fstatfs_check(pair(fake_row=run(fake=True)), V).status == "refuted"
    # rejected as not-cgroup although openat2 works: the check is not only the fallback's
    assert cs.runc_fstatfs_check(pair("host", rejected("host", "yes"), "yes"), V).status == "refuted"
    other = run(fake=True, ran=False, failed_stage="container_created", error="permission denied")
    assert cs.runc_fstatfs_check(host + pair(fake_row=other), V).status == "inconclusive"
    assert cs.runc_fstatfs_check(host, V).status == "not-testable"  # openat2 everywhere: fallback never used
    nt = cs.runc_fstatfs_check(host + [run("gvisor:2022", **R03), run("gvisor:2022", fake=True, **R03)], V)
    assert nt.status == "not-testable" and "gvisor:2022" in nt.reason


def d(env="gvisor:2024", hierarchy="memory", mkdir="ok", files=7, procs=True, create="EPERM"):
    return {"env": env, "hierarchy": hierarchy, "fs": "cgroup (0x27e0eb)", "mkdir": mkdir, "files": files,
            "has_cgroup_procs": procs, "create_file": create}


def test_cgroupfs_refuses_files_every_status():
    assert cs.cgroupfs_refuses_files([d(), d(hierarchy="pids")]).status == "reproduced"
    assert cs.cgroupfs_refuses_files([d(), d(hierarchy="pids", create="ok")]).status == "refuted"
    assert cs.cgroupfs_refuses_files([d(create="EACCES")]).status == "inconclusive"
    assert cs.cgroupfs_refuses_files([d(mkdir="EPERM")]).status == "not-testable"
    assert cs.cgroupfs_refuses_files([d(env="host", create="EACCES")]).status == "not-testable"  # context only


def test_empty_cgroup_dirs_every_status():
    assert cs.empty_cgroup_dirs([d(files=0, procs=False)]).status == "reproduced"
    assert cs.empty_cgroup_dirs([d(), d(hierarchy="cpu", files=5)]).status == "refuted"
    assert cs.empty_cgroup_dirs([d(), d(hierarchy="cpu", files=0, procs=False)]).status == "inconclusive"
    assert cs.empty_cgroup_dirs([d(mkdir="EROFS")]).status == "not-testable"
    assert cs.empty_cgroup_dirs([]).status == "not-testable"


def m(env="gvisor:2024", source="tmpfs", controller="cpu", bound=True, fs="tmpfs (0x1021994)", value=None, **kw):
    key = {"cpu": "cpu.shares", "cpuacct": "cpuacct.usage_percpu", "memory": "memory.limit_in_bytes"}[controller]
    val = value if value is not None else {"cpu": "1024", "cpuacct": "0 0 0 0",
                                           "memory": "9223372036854771712"}[controller]
    return {"env": env, "source": source, "source_fs": fs.split(" ")[0], "bind_mounted": bound,
            "real_umounted": "cpu,cpuacct,memory", "controller": controller, "fs": fs, "file": key, "value": val,
            "files": 6, "error": "" if bound else "[Errno 22] Invalid argument", **kw}


def tree(**kw):
    return [m(controller=c, **kw) for c in ("cpu", "cpuacct", "memory")]


def test_fake_tree_mounts_every_status():
    assert cs.fake_tree_mounts("Exp 11", tree()).status == "reproduced"
    assert cs.fake_tree_mounts("Exp 11", tree(fs="v9fs (0x1021997)")).status == "refuted"  # not tmpfs
    bad = tree()[:2] + [m(controller="memory", bound=False)]
    assert cs.fake_tree_mounts("Exp 11", bad).status == "refuted"
    assert cs.fake_tree_mounts("Exp 11", [m(controller="cpu", value="0")]).status == "refuted"
    v9 = tree(source="workdir", fs="v9fs (0x1021997)")
    v = cs.fake_tree_mounts("Exp 10", v9)
    assert v.status == "reproduced" and "cpu.shares = 1024" in v.reason  # Exp 10 does not ask for tmpfs
    assert cs.fake_tree_mounts("Exp 10", tree()).status == "not-testable"  # only tmpfs rows: not Exp 10's tree
    split = cs.fake_tree_mounts("Exp 11", tree() + tree(env="gvisor:2022", bound=False))
    assert split.status == "inconclusive" and "disagree" in split.reason
    assert cs.fake_tree_mounts("Exp 11", tree(env="host")).status == "not-testable"


def t(env="gvisor:2024", runtime="runc", fake=False, ran=True, **kw):
    return {"env": env, "runtime": runtime, "tree": "fake on tmpfs" if fake else "real cgroupfs", "ran": ran,
            "failed_stage": None, "signature": None, "error": "", **kw}


def test_fake_tree_vs_runc_every_status():
    assert cs.fake_tree_vs_runc([t(), t(fake=True), t(runtime="crun", fake=True)], V).status == "refuted"
    notcg = t(fake=True, ran=False, failed_stage="container_created", signature="S21", error=NOTCG)
    assert cs.fake_tree_vs_runc([t(), notcg], V).status == "reproduced"
    other = t(fake=True, ran=False, failed_stage="container_created", signature="R02",
              error="no cgroup mount found in mountinfo")
    assert cs.fake_tree_vs_runc([t(), other], V).status == "inconclusive"
    assert cs.fake_tree_vs_runc([t(**R03), t(fake=True, **R03)], V).status == "not-testable"
    assert cs.fake_tree_vs_runc([t(env="host"), t(env="host", fake=True)], V).status == "not-testable"


def f(env="gvisor:2024", server="research's ops", mounted=True, ls="ENOSYS", cat="ENOSYS",
      replies="ACCESS: Function not implemented", magic="0x65735546", **kw):
    return {"env": env, "server": server, "mounted": mounted, "ls": ls, "cat_cpu_shares": cat,
            "stat_f": "fuseblk 65735546", "statfs_magic": magic, "requests": "INIT,GETATTR,ACCESS,STATFS",
            "error_replies": replies, **kw}


OK = dict(ls="ok: cpu cpuacct memory pids", cat="ok: 1024", replies="")


def test_fuse_faker_enosys_every_status():
    assert cs.fuse_faker_enosys([f()]).status == "reproduced"
    assert cs.fuse_faker_enosys([f(**OK)]).status == "refuted"
    assert cs.fuse_faker_enosys([f(mounted=False, server_log="fuse: device not found")]).status == "refuted"
    assert cs.fuse_faker_enosys([f(ls="EINVAL")]).status == "inconclusive"
    split = cs.fuse_faker_enosys([f(), f(env="gvisor:2022", **OK)])
    assert split.status == "inconclusive" and "disagree" in split.reason
    assert cs.fuse_faker_enosys([f(env="host", **OK)]).status == "not-testable"


def test_fuse_enosys_origin_every_status():
    fixed = f(server="+ access handler", **OK)
    v = cs.fuse_enosys_origin([f(), fixed])
    assert v.status == "refuted" and "ACCESS: Function not implemented" in v.reason
    assert cs.fuse_enosys_origin([f(replies=""), fixed]).status == "reproduced"  # the server never said ENOSYS
    assert cs.fuse_enosys_origin([f(), f(server="+ access handler")]).status == "reproduced"  # handler no help
    assert cs.fuse_enosys_origin([f(), f(server="+ access handler", ls="EIO", cat="EIO")]).status == "inconclusive"
    nt = cs.fuse_enosys_origin([f(**OK), f(server="+ access handler", **OK)])
    assert nt.status == "not-testable" and "no ENOSYS" in nt.reason
    assert cs.fuse_enosys_origin([f(env="host"), fixed]).status == "not-testable"


def test_fuse_statfs_magic_every_status():
    assert cs.fuse_statfs_magic([f(), f(env="host")]).status == "refuted"
    assert cs.fuse_statfs_magic([f(magic="0x27e0eb")]).status == "reproduced"
    assert cs.fuse_statfs_magic([f(magic="0x27e0eb"), f(env="host")]).status == "inconclusive"
    assert cs.fuse_statfs_magic([f(mounted=False)]).status == "not-testable"


# -- notebook 30 (k3snb.studies.shims) ---------------------------------------------------------------
from k3snb.studies import shims as sh  # noqa: E402

CTD = "containerd 1.6.20~ds1"
V3ERR = ('ctr: failed to start shim: start failed: dial unix @{"version":3,"address":"unix:///run/containerd-shim-v3'
         '.sock","protocol":"ttrpc"}: connect: connection refused: unknown')


def s(env="gvisor:2024", shim="io.containerd.runc.v2", ran=True, error="", sig=None):
    return {"env": env, "shim": shim, "ran": ran, "stdout": "hello" if ran else "", "error": error, "signature": sig}


def full(env, matched=True, v3=V3ERR):
    return [s(env, ran=matched, error="" if matched else "ctr: failed to create shim task: OCI runtime create failed"),
            s(env, "io.containerd.runc.v1"), s(env, "v3-bootstrap shim", ran=False, error=v3)]


def test_shim_blocks_gvisor_every_status():
    v = sh.shim_blocks_gvisor(full("host") + full("gvisor:2024"), CTD)
    assert v.status == "refuted" and "containerd 1.6.20" in v.reason and "not installed here" in v.reason
    assert sh.shim_blocks_gvisor(full("host") + full("gvisor:2024", matched=False), CTD).status == "reproduced"
    both = full("host", matched=False) + full("gvisor:2024", matched=False)
    assert sh.shim_blocks_gvisor(both, CTD).status == "inconclusive"
    unpack = [s("gvisor:2022", ran=False, error="ctr: failed to extract layer sha256:<layer>: …", sig="R01")]
    assert sh.shim_blocks_gvisor(full("host") + unpack, CTD).status == "not-testable"
    assert sh.shim_blocks_gvisor(full("host"), CTD).status == "not-testable"


def test_shim_version_mismatch_every_status():
    v = sh.shim_version_mismatch(full("host") + full("gvisor:2024"), CTD)
    assert v.status == "reproduced" and "gvisor:2024" in v.reason
    assert sh.shim_version_mismatch(full("host") + full("gvisor:2024", v3="ctr: other error"), CTD).status == "refuted"
    assert sh.shim_version_mismatch(full("host", v3="") + full("gvisor:2024"), CTD).status == "refuted"
    assert sh.shim_version_mismatch(full("gvisor:2024"), CTD).status == "not-testable"  # no host row
    assert sh.shim_version_mismatch(full("host") + full("gvisor:2024", matched=False), CTD).status == "not-testable"


def sc(env="gvisor:2024", o2="ENOSYS", by="open (fallback)", seen="TMPFS_MAGIC", runc=NOTCG):
    return {"env": env, "openat2_cgroupfs": o2, "fake_procs_opened_by": by, "fstatfs_of_fake_procs": seen,
            "runc": runc}


def test_runc_fstatfs_check_with_traced_syscalls():
    host = pair("host", run("host", fake=True, openat2="yes"), "yes")
    good = [sc(), sc("host", "ok", "openat2", "none", "ran")]
    v = cs.runc_fstatfs_check(host + pair(), V, good)
    assert v.status == "reproduced" and "strace:" in v.reason and "runc_syscalls" in v.evidence
    # rejected although no fstatfs saw a non-cgroup type: not the fstatfs check
    assert cs.runc_fstatfs_check(host + pair(), V, [sc(seen="none")]).status == "refuted"
    # accepted after an fstatfs saw tmpfs: the check did not decide
    assert cs.runc_fstatfs_check(host + pair(), V, [sc("host", "ok", "openat2", "TMPFS_MAGIC", "ran")]).status \
        == "refuted"
    # a run that never reached the cgroup files says nothing
    assert cs.runc_fstatfs_check(host + pair(), V, [sc("gvisor:2022", seen="none", runc="mountpoint for devices")]
                                 ).status == "reproduced"


# -- the environments each verdict speaks for (the report's claims × environments columns) -------------
def test_verdicts_name_the_environments_they_rest_on():
    broken = [run("gvisor:2022", **R03), run("gvisor:2022", fake=True, **R03)]
    # a build that cannot test does not decide, so the verdict is filed under the build that did
    assert cs.faker_beats_runc(broken + pair(), V).environments == ["gvisor-2024"]
    assert cs.faker_beats_runc(broken, V).environments == ["gvisor-2022"]  # not-testable where it was tried
    host = pair("host", run("host", fake=True, openat2="yes"), "yes")
    v = cs.runc_fstatfs_check(host + pair() + broken, V)  # about runc's code path: host and gVisor both count
    assert (v.status, v.environments) == ("reproduced", ["gvisor-2024", "host"])
    made = {"mkdir": "ok", "files": "", "has_cgroup_procs": False, "create_file": "EPERM"}
    dirs = [{"env": e, "hierarchy": "memory", **made} for e in ("gvisor:2022", "gvisor:2024", "host")]
    assert cs.cgroupfs_refuses_files(dirs).environments == ["gvisor-2022", "gvisor-2024"]
    assert cs.empty_cgroup_dirs(dirs).environments == ["gvisor-2022", "gvisor-2024"]
    assert cs.fake_tree_mounts("Exp 11", tree() + tree(env="gvisor:2022")).environments == ["gvisor-2022",
                                                                                            "gvisor-2024"]
    assert cs.fake_tree_vs_runc([t(), t(fake=True)], V).environments == ["gvisor-2024"]
    assert cs.fuse_faker_enosys([f(), f(env="gvisor:2022"), f(env="host")]).environments == ["gvisor-2022",
                                                                                            "gvisor-2024"]
    assert cs.fuse_enosys_origin([f(), f(server="+ access handler", **OK)]).environments == ["gvisor-2024"]
    assert cs.fuse_statfs_magic([f(), f(env="host")]).environments == ["gvisor-2024", "host"]


def test_shim_verdicts_name_the_environments_they_compare():
    v = sh.shim_blocks_gvisor(full("host") + full("gvisor:2024") + full("gvisor:2022"), CTD)
    assert (v.status, v.environments) == ("refuted", ["gvisor-2022", "gvisor-2024"])  # the host row is context
    v = sh.shim_version_mismatch(full("host") + full("gvisor:2024"), CTD)
    assert (v.status, v.environments) == ("reproduced", ["host", "gvisor-2024"])  # host vs gVisor: both sides
