"""k3snb._system: the one mountinfo parser (unit tests on sample /proc text, psutil's
``mock_open_content`` style) and the syscalls against the real kernel."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from unittest import mock

import pytest

from k3snb import _system
from k3snb._state import Record
from k3snb._system import find_mount, mountinfo, parse_mountinfo, unescape
from k3snb.runners import Host

# Shaped like a real /proc/self/mountinfo: optional fields, none, several; escaped paths.
SAMPLE = "\n".join([
    r"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro",
    r"23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw",
    r"24 22 0:22 / /sys/fs/cgroup rw,nosuid shared:9 master:3 - cgroup2 cgroup2 rw,nsdelegate",
    r"40 22 0:40 / /tmp/with\040space rw,relatime - tmpfs my\040src rw,size=1024k",
    r"41 22 0:41 / /tmp/tab\011here rw - tmpfs none rw",
    r"42 22 0:42 / /tmp/new\012line rw - tmpfs none rw",
    r"43 22 0:43 /sub\134dir /tmp/back\134slash rw - tmpfs none rw",
    r"44 22 0:44 / /tmp/lit\134040eral rw - tmpfs none rw",  # a real backslash followed by "040"
    r"45 22 0:45 / /mnt/data rw - 9p none rw,trans=fd,rfdno=4,wfdno=4",
    "garbage line without a separator",
    "",
])


@contextlib.contextmanager
def mock_open_content(pairs: dict[str, str | bytes]):
    """Make ``open(path)`` return the given content for the given paths (psutil's test helper idea)."""
    real = builtins.open

    def fake(file, mode="r", *args, **kw):
        if isinstance(file, str) and file in pairs:
            data = pairs[file]
            if "b" in mode:
                return io.BytesIO(data.encode() if isinstance(data, str) else data)
            return io.StringIO(data if isinstance(data, str) else data.decode())
        return real(file, mode, *args, **kw)

    with mock.patch("builtins.open", fake):
        yield


def test_unescape_all_octal_escapes_in_one_pass():
    assert unescape(r"a\040b\011c\012d\134e") == "a b\tc\nd\\e"
    assert unescape(r"lit\134040eral") == "lit\\040eral"  # not unescaped twice
    assert unescape("plain") == "plain"


def test_parse_sample_mountinfo():
    ms = parse_mountinfo(SAMPLE)
    by_mp = {m.mountpoint: m for m in ms}
    assert len(ms) == 9, "the garbage and empty lines are skipped"
    assert by_mp["/"].fstype == "ext4" and by_mp["/"].propagation == "shared:1" and by_mp["/"].id == 22
    assert by_mp["/sys/fs/cgroup"].propagation == "shared:9 master:3"
    assert by_mp["/tmp/with space"].source == "my src" and by_mp["/tmp/with space"].propagation == ""
    assert "/tmp/tab\there" in by_mp and "/tmp/new\nline" in by_mp
    assert by_mp["/tmp/back\\slash"].root == "/sub\\dir"
    assert "/tmp/lit\\040eral" in by_mp
    assert by_mp["/mnt/data"].super_options.startswith("rw,trans=fd")


def test_mountinfo_reads_proc_and_finds_the_mount_of_a_path():
    with mock_open_content({"/proc/1234/mountinfo": SAMPLE}):
        ms = mountinfo(1234)
    assert [m.id for m in ms][:3] == [22, 23, 24]
    assert find_mount("/tmp/with space/deeper/file", ms).id == 40
    assert find_mount("/tmp/with spaceX", ms).mountpoint == "/"
    assert find_mount("/mnt/data", ms).fstype == "9p"
    assert _system.is_mountpoint("/", ms) and not _system.is_mountpoint("/mnt", ms)
    assert mountinfo(987654321) == []  # a process that does not exist: no mounts, no error


def test_callers_use_the_one_parser():
    """probing and workarounds read mounts through k3snb._system (same escapes, same answers)."""
    from k3snb.probing._collect import _find_mount
    from k3snb.probing._collect import parse_mountinfo as probe_parse
    from k3snb.workarounds import _ops

    pm = probe_parse(SAMPLE)
    assert [m["mountpoint"] for m in pm] == [m.mountpoint for m in parse_mountinfo(SAMPLE)]
    assert pm[3]["propagation"] == "private" and pm[3]["id"] == "40"  # the probe's record shape
    assert _find_mount(pm, "/tmp/new\nline/x")["id"] == "42"
    assert _ops.mountinfo is _system.mountinfo and _ops.umount is _system.umount


def test_statfs_and_kill_helpers_on_the_real_kernel():
    assert _system.statfs_type("/proc") == 0x9FA0  # PROC_SUPER_MAGIC
    assert _system.statfs_type("/does/not/exist") is None
    p = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 5
        from k3snb._procfs import descendants

        while len(descendants(p.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        kids = descendants(p.pid)
        assert len(kids) == 2
        killed = _system.kill_tree(p.pid)
        assert set(killed) == {p.pid, *kids}
        p.wait(5)
        assert _system.wait_gone(kids, 3) == []
        assert _system.kill(p.pid) is False  # reaped: nothing to signal
    finally:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait()


def test_program_output_is_asked_once_per_binary(tmp_path):
    prog = tmp_path / "tool"
    count = tmp_path / "count"
    prog.write_text(f"#!/bin/sh\necho x >> {count}\necho tool 1.0\n")
    prog.chmod(0o755)
    assert _system.program_output(prog) == (0, "tool 1.0\n", "")
    assert _system.program_output(prog)[1] == "tool 1.0\n"
    assert count.read_text().count("x") == 1
    with pytest.raises(OSError):
        _system.program_output(tmp_path / "missing")


@pytest.mark.root
@pytest.mark.parametrize("name", ["with space", "with\ttab", "with\nnewline", "back\\040slash"])
def test_real_mountinfo_with_awkward_paths(name):
    """The kernel's own escaping, read back: a tmpfs mounted (in a Host runner's private mount
    namespace) at a path with a space, a tab, a newline or a backslash."""
    with Host() as h:
        target = h.workdir / f"k3snb-{name}"
        target.mkdir()
        text = h.run(["sh", "-c", 'mount -t tmpfs k3snb-sys "$1" && cat /proc/self/mountinfo', "sh",
                      str(target)], check=True).stdout
        found = [m for m in parse_mountinfo(text) if m.source == "k3snb-sys"]
        assert [m.mountpoint for m in found] == [str(target)]
        assert find_mount(str(target / "file"), parse_mountinfo(text)).fstype == "tmpfs"


@pytest.mark.root
def test_reaper_unmounts_a_stale_mount_whose_path_has_a_space(tmp_path):
    """A killed run's tagged mount at a path with a space is found and unmounted by the reaper
    (the old reaper split mountinfo lines on whitespace and never saw it)."""
    from k3snb.runners.reaper import clean_records

    target = tmp_path / f"k3snb-mnt {uuid.uuid4().hex[:6]}"
    target.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    subprocess.run(["mount", "-t", "tmpfs", "k3snb-reaper-test", str(target)], check=True)
    try:
        rec = Record(kind="tmp", id=f"test-{uuid.uuid4().hex[:8]}", owner_pid=dead.pid, owner_start=1.0,
                     mounts=[str(target)], paths=[str(target)]).save()
        assert not rec.owner_alive()
        report = clean_records([rec])
        assert any(a == f"umount {target}" for a in report[0]["actions"]), report
        assert not any(m.mountpoint == str(target) for m in mountinfo())
        assert not target.exists() and not rec.file.exists()
    finally:
        if any(m.mountpoint == str(target) for m in mountinfo()):
            subprocess.run(["umount", "-l", str(target)])


def test_no_private_copies_of_the_syscalls_left():
    """mountinfo parsing and umount2 live in k3snb/_system.py only (tracing decodes syscall names)."""
    root = Path(__file__).resolve().parents[1] / "k3snb"
    offenders = []
    for f in root.rglob("*.py"):
        rel = f.relative_to(root).as_posix()
        if rel in ("_system.py",) or rel.startswith("tracing/"):
            continue
        text = f.read_text()
        if ".umount2(" in text or re.search(r"""(?:open|Path)\(\s*f?["']/proc/[^"']*mountinfo""", text):
            offenders.append(rel)
    assert not offenders, offenders
    assert os.path.exists(root / "_system.py")
