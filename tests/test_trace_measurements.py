"""The measurement functions behind notebooks 04/06/09/24, run for real on the host."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from k3snb.tracing import measurements as tx


def test_preload_reaches_libc_programs_but_not_static_go():
    if not (shutil.which("gcc") and shutil.which("go")):
        pytest.skip("needs gcc and the Go toolchain (apt-get install gcc golang-go)")
    res = tx.preload_vs_ptrace()
    rows = {r["program"].split()[0]: r for r in res["rows"]}
    cat, go = rows["cat"], rows["goread"]
    assert not cat["static"] and go["static"]
    assert cat["ld_preload"] == "38" and cat["plain"] != "38"
    assert go["ld_preload"] == go["plain"] != "38"  # the dynamic loader never ran: LD_PRELOAD ignored
    assert cat["ptrace"] == "38" and go["ptrace"] == "38"


def test_procsys_reach_rows_cover_every_reader():
    res = tx.procsys_reach(None, ["kernel/panic"])
    readers = {r["reader"] for r in res["rows"]}
    assert readers == {"shell", "subshell", "grandchild", "python-thread", "python-subprocess(vfork)"}
    assert all(r["intercepted"] == r["fake_value"] for r in res["rows"]), res["rows"]


def test_statfs_views_spoof_only_the_chosen_type():
    import ctypes

    buf = ctypes.create_string_buffer(120)
    ctypes.CDLL(None).statfs(b"/", buf)
    root = hex(int.from_bytes(buf.raw[:8], "little"))
    rows = tx.statfs_views(None, ["/", "/proc"], to="9p", from_type=root)
    got = {(r["path"], r["tool"]): r for r in rows}
    assert got[("/", "stat")]["intercepted"] == got[("/", "python")]["intercepted"] == "0x1021997"
    assert got[("/proc", "stat")]["intercepted"] == got[("/proc", "stat")]["plain"] == "0x9fa0"


@pytest.mark.root
def test_runc_init_and_container_are_reached_and_paths_resolve_in_their_namespace():
    if not shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin"):
        pytest.skip("runc missing: apt-get install runc")
    from k3snb.runners.host import Host
    from k3snb.studies.runc import runc_reach  # (measurement composed with runtime bundles: lives in studies)

    with Host() as h:
        ok = runc_reach(h, rootfs_fake="38")
        seed = runc_reach(h, rootfs_fake=None)
    reach = ok["reach"]
    assert ok["plain"]["returncode"] == 0 and ok["traced"]["returncode"] == 0
    assert ok["traced"]["stdout"].split() == ["38", "38"]  # container saw the rootfs copy: its own mount ns
    assert ((reach.exe == "/usr/sbin/runc") & (reach.rewritten > 0)).any()
    assert (reach.comm.fillna("").str.startswith("runc:[2:INIT") & (reach.rewritten > 0)).any()
    assert ((reach.exe == "/bin/busybox") & (reach.rewritten > 0)).any()
    # H1: a target that exists only outside the container turns a present key into ENOENT
    real = Path("/proc/sys/kernel/cap_last_cap").read_text().strip()
    assert seed["plain"]["stdout"].split()[:1] == [real]
    assert "can't open '/proc/sys/kernel/cap_last_cap'" in seed["traced"]["stderr"]
    assert "ENOENT" in set(seed["reach"].errno)
