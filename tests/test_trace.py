"""Tracing real process trees on the host: rows from grandchildren, threads and new namespaces,
process events, failure views, syscall filters, attach/detach, diff, bounded memory, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k3snb.errors import InvalidParameter
from k3snb.tracing import Rule, Trace, diff_traces, trace


def test_grandchildren_rows_tree_and_exit_events():
    t = trace("sh -c \"sh -c 'cat /etc/hostname /k3snb-missing-file'\"; exit 3")
    assert t.returncode == 3
    tree = t.tree()
    cat = tree[tree.exe == "/usr/bin/cat"]
    assert len(cat) == 1 and int(cat.exit.iloc[0]) == 1
    chain, row = [], cat.iloc[0]
    by_pid = tree.set_index("pid")
    while int(row.parent) in by_pid.index:  # walk up to the root of the traced tree
        chain.append(int(row.parent))
        row = by_pid.loc[int(row.parent)]
    assert len(chain) >= 2  # cat is at least a grandchild
    assert all(by_pid.loc[p].exe.endswith("dash") for p in chain)
    assert by_pid.loc[chain[-1]].exit == 3
    d = t.df
    rows = d[(d.syscall == "openat") & (d.path == "/k3snb-missing-file")]
    assert len(rows) == 1 and rows.errno.iloc[0] == "ENOENT" and rows.ret.iloc[0] == -2
    assert rows.open_flags.iloc[0].startswith("O_RDONLY")
    assert (d.syscall == "exit_group").sum() >= 3  # recorded at entry: it never returns
    ev = t.events()
    assert {"exec", "exit"} <= set(ev.event) and {"fork", "vfork", "clone"} & set(ev.event)
    f = t.failures()
    hit = f[(f.path == "/k3snb-missing-file")]
    assert hit.errno.tolist() == ["ENOENT"] and hit.syscall.tolist() == ["openat"]
    files = t.files()
    assert "/etc/hostname" in set(files.path)
    assert set(d.columns) >= {"time", "pid", "tid", "parent", "exe", "syscall", "args", "path", "fd", "open_flags",
                              "ret", "errno", "duration"}


def test_threads_and_new_namespaces_have_rows():
    py = ("import threading;ts=[threading.Thread(target=lambda: open('/etc/hostname').read()) for _ in range(3)];"
          "[t.start() for t in ts];[t.join() for t in ts]")
    t = trace(f"{sys.executable} -c \"{py}\"; unshare -m -p -f -U -r sh -c 'cat /etc/hostname'",
              syscalls=["openat", "%process"])
    d = t.df
    reads = d[(d.syscall == "openat") & (d.path == "/etc/hostname")]
    py_rows = reads[reads.exe == os.path.realpath(sys.executable)]
    assert len(py_rows) == 3 and py_rows.tid.nunique() == 3 and py_rows.pid.nunique() == 1
    ns_rows = reads[reads.exe == "/usr/bin/cat"]
    assert len(ns_rows) == 1  # the cat inside new user, mount and pid namespaces
    unshare = d[d.syscall == "unshare"]
    assert len(unshare) == 1 and unshare.ret.iloc[0] == 0
    assert t.meta["seccomp"] is True  # a syscall subset uses the BPF filter
    assert set(d[d.event == "syscall"].syscall) <= {"openat"} | {
        "fork", "vfork", "clone", "clone3", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
        "kill", "tkill", "tgkill", "unshare", "setns"}


def test_killed_by_signal_is_an_event_and_the_returncode():
    t = trace("kill -USR1 $$")
    assert t.returncode == -10
    k = t.events()
    k = k[k.event == "killed"]
    assert k.detail.tolist() == ["SIGUSR1"]


def test_attach_to_running_process_and_detach(tmp_path):
    p = subprocess.Popen(["sh", "-c", "while :; do cat /etc/hostname >/dev/null; sleep 0.05; done"])
    try:
        time.sleep(0.2)
        t = trace(pid=p.pid, duration=1.0)
        d = t.df
        assert (d.path == "/etc/hostname").sum() >= 3
        assert p.poll() is None  # detached, still running
        time.sleep(0.2)
        with open(f"/proc/{p.pid}/status") as f:
            assert "TracerPid:\t0" in f.read()
    finally:
        p.kill()
        p.wait()


def test_diff_names_what_fails_only_in_one_run(tmp_path):
    (tmp_path / "here").write_text("x\n")
    cmd = "cat /etc/hostname >/dev/null; cat /k3snb-diff-probe"
    a = trace(cmd, syscalls="%file", rules=[Rule.redirect("/k3snb-diff-probe", str(tmp_path / "here"))])
    b = trace(cmd, syscalls="%file")
    assert a.returncode == 0 and b.returncode == 1
    dd = a.diff(b, names=("fixed", "plain"))
    assert diff_traces(a, b, names=("fixed", "plain")).summary() == dd.summary()
    assert len(dd.only_a) == 0
    row = dd.only_b[dd.only_b.path == "/k3snb-diff-probe"]
    assert row.errno.tolist() == ["ENOENT"] and row.exe.tolist() == ["cat"]
    fd = dd.first_divergence
    assert fd["syscall"] == "openat" and fd["path"] == "/k3snb-diff-probe"
    assert fd["fixed"] == "ok" and fd["plain"] == "ENOENT"
    # the rewrite shows up in the traced row
    rw = a.rewrites()
    assert rw.detail.str.contains(str(tmp_path / "here")).any()
    assert "<table" in dd._repr_html_() and "fail only" in repr(dd.summary())


def test_large_trace_streams_in_batches_with_bounded_memory(tmp_path):
    small = trace("ls -l /usr/share >/dev/null", syscalls="%file", batch=2_000)
    t = trace("ls -lR /usr/share/doc >/dev/null", syscalls="%file", out=tmp_path, batch=2_000)
    rows = t.meta["rows"]
    assert rows > 5 * 2_000, rows  # several batches were written
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.memory_map(str(t.path)) as src:
        assert ipc.open_file(src).num_record_batches >= 5
    # the tracer's peak memory does not grow with the trace (one batch is held at a time)
    grew = t.meta["maxrss_kb"] - small.meta["maxrss_kb"]
    assert small.meta["rows"] < 2_000 and grew < 20_000, (grew, small.meta["rows"])
    few = t.to_frame(["syscall", "errno"])
    assert list(few.columns) == ["syscall", "errno"] and len(few) == rows


def test_bad_input_gives_one_clear_error():
    with pytest.raises(InvalidParameter, match="unknown syscall 'opnat'"):
        trace("true", syscalls=["opnat"])
    with pytest.raises(InvalidParameter, match="category"):
        trace("true", syscalls="%nosuch")
    with pytest.raises(InvalidParameter, match="exactly one"):
        trace()
    with pytest.raises(InvalidParameter, match="empty command"):
        trace("")


def test_html_repr_and_summary():
    t = trace("ls /k3snb-nope", syscalls="%file")
    assert isinstance(t, Trace)
    html = t._repr_html_()
    assert "failing syscalls" in html and "k3snb-nope" in html
    assert t.summary()["returncode"] == 2
    assert "Trace" in repr(t)
    df = t.df
    with t:
        pass
    assert not t.path.parent.exists() and len(df)  # close() removed the files; the frame stays


def test_cli_trace_writes_arrow_and_exits_with_command_status(tmp_path):
    out = tmp_path / "t.arrow"
    meta = tmp_path / "m.json"
    r = subprocess.run([sys.executable, "-m", "k3snb.cli", "trace", "--out", str(out), "--meta", str(meta),
                        "-e", "%file", "--", "sh", "-c", "cat /k3snb-cli-missing; exit 4"],
                       capture_output=True, text=True)
    assert r.returncode == 4, r.stderr
    m = json.loads(meta.read_text())
    assert m["rows"] > 0 and m["returncode"] == 4
    t = Trace(path=out, command=[], returncode=4)
    assert "/k3snb-cli-missing" in set(t.df.path.dropna())


def test_syscall_table_is_generated_and_agrees_with_python_ptrace():
    import importlib.util
    import re

    from k3snb.tracing import _decode, _syscall_table

    src = Path(_syscall_table.__file__).read_text()
    assert "generated by scripts/gen_syscall_table.py" in src and "Sources:" in src
    assert not re.search(r"\b4[2-5]\d: \"", Path(_decode.__file__).read_text())  # no hand-typed numbers
    root = importlib.util.find_spec("ptrace").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("pp_x86_64", Path(root) / "syscall/linux/x86_64.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    theirs = {n: v for n, v in mod.SYSCALL_NAMES.items() if n < 512}  # 512+ are x32 numbers
    ours = _decode.SYSCALL_NAMES
    differ = {n: (ours.get(n), v) for n, v in theirs.items() if ours.get(n) != v}
    assert differ == {283: ("timerfd_create", "timerfd")}, differ  # the kernel's name for 283
    assert ours[_decode.SYSCALL_NUMBERS["fchmodat2"]] == "fchmodat2" and _decode.SYSCALL_NUMBERS["openat2"] == 437


def test_demo_sources_ship_as_package_data_and_build(tmp_path):
    import fnmatch
    import tomllib

    from k3snb.tracing._demo import build_preload, demo_source

    globs = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["k3snb"]
    for name in ("preload.c", "goread.go"):
        assert demo_source(name).strip()
        assert any(fnmatch.fnmatch(f"data/demos/{name}", g) for g in globs), globs  # in the wheel too
    if not shutil.which("gcc"):
        pytest.skip("needs gcc")
    so = build_preload(tmp_path)
    assert so.read_bytes()[:4] == b"\x7fELF"
    assert (tmp_path / "k3snb_preload.c").read_text() == demo_source("preload.c")
