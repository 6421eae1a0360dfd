"""The tracer inside gVisor (both runsc builds): interception, statfs spoofing, exit status,
trees across namespaces, cancellation, and a host-vs-gVisor diff — against real sandboxes."""

from __future__ import annotations

import time

import pytest

from k3snb.tracing import Rule, diff_traces, intercept, trace

BUILDS = [pytest.param("2022", marks=[pytest.mark.root, pytest.mark.runsc], id="runsc2022"),
          pytest.param("2024", marks=[pytest.mark.root, pytest.mark.runsc2024], id="runsc2024")]
PY_STATFS = ("import ctypes;b=ctypes.create_string_buffer(120);ctypes.CDLL(None).statfs(b'/',b);"
             "print(hex(int.from_bytes(b.raw[:8],'little')))")


@pytest.fixture(scope="module", params=BUILDS)
def gv(request):
    from k3snb.runners.gvisor import GVisor

    with GVisor(runsc=request.param) as g:
        yield g


def test_redirect_and_statfs_spoof_inside_gvisor(gv):
    fake = gv.workdir / "fake"
    fake.mkdir(exist_ok=True)
    (fake / "panic").write_text("10\n")
    cmd = (f"cat /proc/sys/kernel/panic; sh -c 'cat /proc/sys/kernel/panic'; stat -f -c %t /; "
           f"{gv.python} -c \"{PY_STATFS}\"")
    plain = gv.run(cmd)
    assert "No such file" in plain.stderr  # gVisor has no kernel/panic: the fake is what we see
    assert plain.stdout.split()[:2] == ["1021997", "0x1021997"]
    rules = [Rule.redirect("/proc/sys/kernel/panic", str(fake / "panic")), Rule.statfs("ext4", from_type="9p")]
    for seccomp in (None, False):
        r = intercept(cmd, rules, runner=gv, seccomp=seccomp)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["10", "10", "ef53", "0xef53"], (seccomp, r.stdout, r.stderr)
        assert r.stats["rewrites"] == 2 and r.stats["statfs_spoofed"] == 2
    f = r.features
    # detected at start-up, not assumed: gVisor has no GET_SYSCALL_INFO and refuses /proc/pid/mem writes
    assert f["syscall_info"] is False and f["mem_write"] is False
    assert f["seccomp"] is True


def test_forced_errno_inside_gvisor(gv):
    # the syscall number is replaced at the seccomp stop, which gVisor runs before its enter stop
    for seccomp in (None, False):
        r = intercept("cat /etc/hostname; echo rc=$?", [Rule.fail("EACCES", path="/etc/hostname")], runner=gv,
                      seccomp=seccomp)
        assert r.stdout.split() == ["rc=1"] and "Permission denied" in r.stderr, r.stdout + r.stderr
        assert r.stats["errno_forced"] == 1


def test_exit_status_and_signals_inside_gvisor(gv):
    assert intercept("exit 42", [Rule.statfs("ext4", from_type="9p")], runner=gv).returncode == 42
    assert intercept("kill -KILL $$", runner=gv).returncode == -9
    assert intercept("trap 'exit 7' USR1; kill -USR1 $$; sleep 5", runner=gv).returncode == 7


def test_trace_tree_and_namespaces_inside_gvisor(gv):
    t = trace("sh -c \"sh -c 'cat /etc/hostname'\"; unshare -U -r -p -f sh -c 'cat /proc/sys/kernel/panic'",
              runner=gv, syscalls=["openat", "unshare", "execve"])
    d = t.df
    cats = d[(d.syscall == "openat") & (d.exe == "/usr/bin/cat")]
    assert "/etc/hostname" in set(cats.path) and "/proc/sys/kernel/panic" in set(cats.path)
    miss = cats[cats.path == "/proc/sys/kernel/panic"]
    assert miss.errno.tolist() == ["ENOENT"]  # from the cat inside the new pid/user namespaces
    assert d[d.syscall == "unshare"].ret.tolist() == [0]
    assert len(t.tree()) >= 5


def test_cancel_inside_gvisor_leaves_nothing(gv):
    pidf = gv.workdir / "cancel.pid"
    r = intercept(f"sh -c 'echo $$ > {pidf}; exec sleep 60'", runner=gv, timeout=3)
    assert r.timed_out
    pid = pidf.read_text().strip()
    time.sleep(0.3)
    assert gv.run(f"test -d /proc/{pid}").returncode != 0


@pytest.mark.root
@pytest.mark.runsc
def test_diff_host_vs_gvisor_names_the_missing_procsys_key():
    from k3snb.runners.gvisor import GVisor

    cmd = "cat /proc/sys/kernel/cap_last_cap /proc/sys/kernel/panic"
    host = trace(cmd, syscalls="%file")
    with GVisor(runsc="2022") as g:
        gvt = trace(cmd, runner=g, syscalls="%file")
    dd = diff_traces(host, gvt, names=("host", "gvisor"))
    miss = dd.only_b[dd.only_b.path == "/proc/sys/kernel/panic"]
    assert miss.errno.tolist() == ["ENOENT"] and miss.syscall.tolist() == ["openat"]
    assert not dd.only_a.path.str.startswith("/proc/sys").any()  # (PATH/library probing differs)
    fd = dd.first_divergence  # the first read already differs: runsc 2022 has no cap_last_cap here
    assert fd["syscall"] == "openat" and fd["path"] == "/proc/sys/kernel/cap_last_cap"
    assert fd["host"] == "ok" and fd["gvisor"] == "ENOENT"


@pytest.mark.root
@pytest.mark.runsc
def test_cli_intercept_with_runner_exits_with_command_status(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "k3snb.cli", "intercept", "--runner", "gvisor",
                        "--fake", "/proc/sys/kernel/panic=10", "--statfs", "9p=ext4", "--",
                        "sh", "-c", "cat /proc/sys/kernel/panic; stat -f -c %t /; exit 5"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 5, r.stderr
    assert r.stdout.split() == ["10", "ef53"]


def test_directory_redirect_is_decided_inside_the_sandbox(gv):
    # /proc/sys is a directory where the tracer runs (in the sandbox): its whole subtree moves
    fake = gv.workdir / "fakesys"
    (fake / "kernel").mkdir(parents=True, exist_ok=True)
    (fake / "kernel" / "panic").write_text("11\n")
    # (listed with Python: runsc 2022's statx answers EINVAL to ls, traced or not)
    cmd = f"cat /proc/sys/kernel/panic; {gv.python} -c \"import os; print(*os.listdir('/proc/sys'))\""
    r = intercept(cmd, [Rule.redirect("/proc/sys", str(fake))], runner=gv)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["11", "kernel"]
