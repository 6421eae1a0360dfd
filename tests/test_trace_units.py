"""The tracer's pure parts, without ptrace: rule lookup tables, tracee path resolution, the row stream."""

from __future__ import annotations

import os

from k3snb.tracing import Rule
from k3snb.tracing import _decode as D
from k3snb.tracing._match import RuleSet
from k3snb.tracing._resolve import abspath
from k3snb.tracing._store import FIELDS, RowWriter, read_batches


def test_ruleset_matches_exact_files_and_longest_subtree(tmp_path):
    rs = RuleSet([Rule.redirect("/proc/sys", "/fake"), Rule.redirect("/proc/sys/kernel/", "/k/"),
                  Rule.redirect("/etc/hostname", "/h")])
    assert rs.match_redirect(b"/proc/sys") == b"/fake"
    assert rs.match_redirect(b"/proc/sys/vm/x") == b"/fake/vm/x"
    assert rs.match_redirect(b"/proc/sys/kernel/panic") == b"/k/panic"  # the longer subtree wins
    assert rs.match_redirect(b"/proc/sysrq-trigger") is None  # "/" boundaries only
    assert rs.match_redirect(b"/etc/hostname") == b"/h" and rs.match_redirect(b"/etc/hostname/x") is None
    assert rs.has_path_rules and not rs.only_exact
    assert set(D.PATH_ARGS) <= rs.stop_nrs()


def test_ruleset_exact_only_tables_and_stops():
    rs = RuleSet([Rule.redirect("/etc/hostname", "/h"), Rule.statfs("ext4", from_type="9p"),
                  Rule.fail("EPERM", syscalls=["unshare"])])
    assert rs.only_exact and b"hostname" in rs.leaves and rs.roots == (b"/etc/hostname",)
    assert rs.statfs_type == {0x01021997: 0xEF53}
    assert rs.errno_nr == {D.SYSCALL_NUMBERS["unshare"]: 1}
    assert {D.STATFS_NR, D.FSTATFS_NR, D.SYSCALL_NUMBERS["unshare"]} <= rs.stop_nrs()
    assert RuleSet([]).stop_nrs() == set() and not RuleSet([]).has_path_rules


def test_abspath_resolves_like_the_kernel_for_cwd_and_dirfd(tmp_path):
    me = os.getpid()
    assert abspath(me, b"/a//b/./c", None) == b"/a/b/c"
    assert abspath(me, b"", None) is None
    assert abspath(me, b"x/../y", D.AT_FDCWD) == os.fsencode(os.getcwd()) + b"/y"
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert abspath(me, b"f", fd) == os.fsencode(tmp_path) + b"/f"
    finally:
        os.close(fd)


def test_row_stream_round_trip_and_unnamed_temp(tmp_path):
    w = RowWriter(tmp_path / "t.arrow", batch=2, publish=False)
    row = tuple(range(len(FIELDS)))
    for _ in range(5):
        w(row)
    w.close()
    assert list(tmp_path.iterdir()) == []  # unnamed until converted
    assert [len(c[0]) for c in read_batches(w.path)] == [2, 2, 1]
    w.discard()
    published = RowWriter(tmp_path / "t.rows")
    published(row)
    published.close()
    assert [p.name for p in tmp_path.iterdir()] == ["t.rows"]
    assert [c[0] for c in read_batches(tmp_path / "t.rows")] == [[0]]


def test_spawn_failing_before_exec_is_a_trace_error_and_leaves_no_child():
    import subprocess
    import sys

    code = ("import os\nfrom k3snb.errors import TraceError\nfrom k3snb.tracing._engine import Engine\n"
            "try:\n    Engine().spawn(['/bin/true'], cwd='/nonexistent-k3snb-dir')\n"
            "except TraceError as e:\n    print('ERR', e.msg)\n"
            "try:\n    os.waitpid(-1, os.WNOHANG)\n    print('CHILD LEFT')\nexcept ChildProcessError:\n"
            "    print('NO CHILD')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "ERR the child for /bin/true exited before exec" in r.stdout, r.stdout + r.stderr
    assert "NO CHILD" in r.stdout and "cannot execute /bin/true" in r.stderr
