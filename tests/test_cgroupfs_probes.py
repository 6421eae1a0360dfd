"""k3snb.runtime.cgroupfs_probes against the real kernel, libfuse and runsc 2024 (notebooks 07 and 17).

The verdicts on these rows are tested on recorded shapes in tests/test_studies_cgroupfs.py; here the
measurements themselves run, and leave no mount behind.
"""

from __future__ import annotations

import errno

import pytest

from k3snb._system import mountinfo
from k3snb.runtime import cgroupfs_probes as cp


def _fuse_mounts() -> list[str]:
    return [m.mountpoint for m in mountinfo() if "k3snb-fuse-" in m.mountpoint]


def test_the_fakers_file_set_is_the_catalogs():
    assert len(cp.FAKER_FILES) == 21 and cp.FAKER_FILES["cpu.shares"] == "1024"
    assert {"cgroup.procs", "tasks", "memory.soft_limit_in_bytes"} <= set(cp.FAKER_FILES)


def test_openat2_probe_tells_success_from_failure(tmp_path):
    assert cp.openat2_errno(str(tmp_path)) == 0  # this host's kernel has openat2 (>= 5.6)
    assert cp.openat2_errno(str(tmp_path / "missing")) == errno.ENOENT


def test_sanitize_drops_pids_ids_and_paths():
    text = ('time="x" failed to write 9318: open /sys/fs/cgroup/memory/k3snb-fake-0123abcd/cgroup.procs in '
            '/work/run-1/x')
    out = cp.sanitize(text, {"/work/run-1": "<workdir>"})
    assert out == "failed to write <pid>: open /sys/fs/cgroup/memory/<id>/cgroup.procs in <workdir>/x"


@pytest.mark.root
def test_fuse_faker_on_the_host_lists_reads_and_reports_the_fuse_magic():
    rows = cp.fuse_faker(["host"])
    assert [r["server"] for r in rows] == ["research's ops", "+ access handler"]
    for r in rows:
        assert r["mounted"] and r["ls"] == "ok: cpu cpuacct memory pids" and r["cat_cpu_shares"] == "ok: 1024"
        assert r["statfs_magic"] == "0x65735546"  # FUSE_SUPER_MAGIC: the server cannot choose it (C14)
    assert not _fuse_mounts()


@pytest.mark.root
@pytest.mark.runsc2024
@pytest.mark.slow
def test_fuse_faker_in_gvisor_2024_gets_enosys_only_without_an_access_handler():
    plain, fixed = cp.fuse_faker(["gvisor:2024"])
    assert plain["mounted"] and plain["ls"] == "ENOSYS" and plain["cat_cpu_shares"] == "ENOSYS"
    assert "ACCESS: Function not implemented" in plain["error_replies"]
    assert fixed["ls"].startswith("ok") and fixed["cat_cpu_shares"] == "ok: 1024"
