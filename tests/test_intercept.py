"""Interception against real process trees on the host: redirects, fakes, statfs, errno, status,
signals, cancellation, job control, static Go binaries, new namespaces, ERESTARTSYS restarts."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k3snb.errors import InvalidParameter
from k3snb.tracing import Rule, intercept, load_rules, save_rules

REAL = Path("/proc/sys/kernel/cap_last_cap").read_text().strip()
FAKE = "38" if REAL != "38" else "37"
KEY = "/proc/sys/kernel/cap_last_cap"
MODES = [pytest.param(None, id="seccomp"), pytest.param(False, id="allstops")]


@pytest.fixture
def fake(tmp_path):
    d = tmp_path / "fake"
    (d / "kernel").mkdir(parents=True)
    (d / "kernel" / "cap_last_cap").write_text(FAKE + "\n")
    return d


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.parametrize("seccomp", MODES)
def test_redirect_through_shells_children_threads_and_vfork(fake, seccomp):
    py = ("import threading,subprocess,os;"
          f"r=[];ts=[threading.Thread(target=lambda: r.append(open('{KEY}').read().strip())) for _ in range(4)];"
          "[t.start() for t in ts];[t.join() for t in ts];print('threads', *r);"
          f"print('spawn', subprocess.run(['cat','{KEY}'],capture_output=True,text=True).stdout.strip());"
          f"pid=os.posix_spawn('/bin/cat',['cat','{KEY}'],os.environ);os.waitpid(pid,0)")
    cmd = (f"cat {KEY}; sh -c 'cat {KEY}'; (cat {KEY}) & wait; "
           f"{sys.executable} -c \"{py}\"")
    untraced = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True).stdout.split()
    r = intercept(cmd, [Rule.redirect(KEY, str(fake / "kernel" / "cap_last_cap"))], seccomp=seccomp)
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    assert REAL in untraced and FAKE not in untraced  # the test can tell the two apart
    assert out == [FAKE, FAKE, FAKE, "threads", FAKE, FAKE, FAKE, FAKE, "spawn", FAKE, FAKE], out
    assert r.stats["rewrites"] == 9
    assert r.meta["seccomp"] is (seccomp is None)


def test_prefix_redirect_relative_paths_and_dirfds(fake):
    # relative to the cwd and to an O_DIRECTORY fd: the tracer resolves both before matching
    py = ("import os; d=os.open('/proc/sys/kernel', os.O_RDONLY|os.O_DIRECTORY);"
          "print(os.read(os.open('cap_last_cap', os.O_RDONLY, dir_fd=d), 10).decode().strip())")
    r = intercept(f"cd /proc/sys/kernel && cat cap_last_cap && cat ../kernel/./cap_last_cap && "
                  f"{sys.executable} -c \"{py}\"", [Rule.redirect("/proc/sys/", str(fake) + "/")])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [FAKE, FAKE, FAKE]
    # exact-file rules take the last-component shortcut for relative paths; still redirected
    r = intercept("cd /proc/sys/kernel && cat cap_last_cap && cat ./../kernel/cap_last_cap && cat osrelease",
                  [Rule.redirect(KEY, str(fake / "kernel" / "cap_last_cap"))])
    assert r.stdout.split() == [FAKE, FAKE, os.uname().release], r.stdout + r.stderr


def test_path_syscall_families_are_redirected(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "bin").mkdir()
    os.symlink("/bin/echo", real / "bin" / "hello")
    v = "/k3snb-virtual-dir"
    assert not os.path.exists(v)
    cmd = (f"mkdir {v}/d && echo data > {v}/d/f && mv {v}/d/f {v}/d/g && ln -s g {v}/d/l && "
           f"readlink {v}/d/l && stat -c %s {v}/d/g && test -e {v}/d/g && ls {v}/d && "
           f"{v}/bin/hello exec-ok && touch {v}/d/gone && rm {v}/d/gone && ln {v}/d/g {v}/d/hard && "
           f"chmod 600 {v}/d/hard && stat -f -c %T {v}/d >/dev/null")
    r = intercept(cmd, [Rule.redirect(v + "/", str(real) + "/")])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["g", "5", "g", "l", "exec-ok"]
    # the effects landed in the redirect target on the host
    assert (real / "d" / "g").read_text() == "data\n"
    assert os.readlink(real / "d" / "l") == "g"
    assert not (real / "d" / "gone").exists() and oct((real / "d" / "hard").stat().st_mode)[-3:] == "600"
    assert not os.path.exists(v)
    names = {line.split()[3] for line in r.log}
    assert {"mkdir", "openat", "rename", "renameat2", "symlink", "symlinkat", "readlink", "readlinkat",
            "execve", "statx", "newfstatat", "unlink", "unlinkat", "link", "linkat", "chmod", "fchmodat",
            "statfs"} & names >= {"mkdir", "openat", "execve", "statfs"}
    assert {"renameat2", "rename"} & names and {"unlinkat", "unlink"} & names
    assert {"symlinkat", "symlink"} & names and {"readlink", "readlinkat"} & names


def _statfs_type(path: str) -> int:
    buf = ctypes.create_string_buffer(120)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.statfs(path.encode(), buf) == 0
    return int.from_bytes(buf.raw[:8], "little")


def test_statfs_spoof_seen_by_stat_and_python(tmp_path):
    real = _statfs_type("/")
    py = ("import ctypes;b=ctypes.create_string_buffer(120);ctypes.CDLL(None).statfs(b'/',b);"
          "print(hex(int.from_bytes(b.raw[:8],'little')))")
    cmd = f"stat -f -c %t /; {sys.executable} -c \"{py}\"; stat -f -c %t {tmp_path}; stat -f -c %t /proc"
    r = intercept(cmd, [Rule.statfs("9p", from_type=real), Rule.statfs("0x5346414f", path=str(tmp_path))])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[0] == "1021997" and lines[1] == "0x1021997"
    assert lines[2] == "5346414f"
    assert lines[3] == "9fa0"  # proc is neither the spoofed type nor under the path
    assert r.stats["statfs_spoofed"] >= 3
    assert hex(real) != "0x1021997"


def test_fake_file_contents_and_forced_errno(tmp_path):
    target = tmp_path / "secret"
    target.write_text("visible\n")
    other = tmp_path / "other"
    other.write_text("x\n")
    rules = [Rule.fake("/proc/sys/kernel/panic", "10"), Rule.fail("EACCES", path=str(target)),
             Rule.fail("ENOENT", path=str(other)), Rule.fail("EPERM", syscalls=["unshare"])]
    r = intercept(f"cat /proc/sys/kernel/panic; cat {target}; echo rc=$?; unshare -U true; echo rc=$?; "
                  f"cat {other}", rules)
    assert r.stdout.split() == ["10", "rc=1", "rc=1"], r.stdout
    assert "Permission denied" in r.stderr and "Operation not permitted" in r.stderr
    assert "No such file" in r.stderr  # a second path rule on the same syscalls applies too
    assert r.stats["errno_forced"] == 3
    untraced = subprocess.run(["sh", "-c", f"cat {target}; unshare -U true; echo rc=$?"], capture_output=True, text=True)
    assert untraced.stdout.split() == ["visible", "rc=0"]


@pytest.mark.parametrize("seccomp", MODES)
def test_exit_codes_and_signals_propagate(seccomp):
    assert intercept("exit 42", seccomp=seccomp).returncode == 42
    assert intercept("kill -KILL $$", seccomp=seccomp).returncode == -9
    assert intercept("kill -TERM $$", seccomp=seccomp).returncode == -15
    assert intercept("sh -c 'kill -USR1 $$'; echo $?", seccomp=seccomp).stdout.strip() == str(128 + 10)
    # a handled signal inside the tree is delivered, not swallowed
    assert intercept("trap 'exit 7' USR1; kill -USR1 $$; sleep 5", seccomp=seccomp).returncode == 7


def _tracer(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "k3snb.tracing", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_file(p: Path, limit: float = 10) -> str:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if p.exists() and p.read_text().strip():
            return p.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{p} not written")


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 7), (signal.SIGINT, 8)])
def test_cli_forwards_sigterm_sigint_and_exits_with_command_status(tmp_path, sig, code):
    ready = tmp_path / "ready"
    script = f"trap 'exit 7' TERM; trap 'exit 8' INT; echo $$ > {ready}; while :; do sleep 0.05; done"
    p = _tracer(["intercept", "--redirect", "/nonexistent-a=/nonexistent-b", "--", "sh", "-c", script])
    try:
        _wait_file(ready)
        p.send_signal(sig)
        assert p.wait(10) == code
    finally:
        p.kill()
        p.wait()


def test_tracer_death_kills_the_tree(tmp_path):
    pidf = tmp_path / "pid"
    p = _tracer(["intercept", "--statfs", "9p=ext4", "--", "sh", "-c", f"sleep 60 & echo $! > {pidf}; wait"])
    try:
        child = int(_wait_file(pidf))
        assert _alive(child)
        p.kill()  # SIGKILL: no cleanup code runs in the tracer, EXITKILL must do it
        p.wait()
        end = time.monotonic() + 5
        while _alive(child) and time.monotonic() < end:
            time.sleep(0.02)
        assert not _alive(child)
    finally:
        p.kill()
        p.wait()


def test_keyboard_interrupt_in_a_cell_kills_the_tree(tmp_path):
    pidf = tmp_path / "pid"

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            intercept(f"sh -c 'echo $$ > {pidf}; exec sleep 60'")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    pid = int(pidf.read_text())
    end = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.02)
    assert not _alive(pid)


def test_timeout_kills_the_tree(tmp_path):
    pidf = tmp_path / "pid"
    r = intercept(f"echo $$ > {pidf}; exec sleep 60", timeout=4)  # (room for a slow start on a loaded machine)
    assert r.timed_out and r.returncode != 0
    pid = int(pidf.read_text())
    time.sleep(0.2)
    assert not _alive(pid)


def test_job_control_keeps_a_stopped_child_stopped():
    # SEIZE + PTRACE_LISTEN: a SIGSTOPped child stays stopped (state T/t), not silently running (S)
    r = intercept("sleep 5 & p=$!; sleep 0.2; kill -STOP $p; sleep 0.3; "
                  "awk '/^State/{print $2}' /proc/$p/status; kill -CONT $p; sleep 0.2; "
                  "awk '/^State/{print $2}' /proc/$p/status; kill $p")
    states = r.stdout.split()
    assert states[0] in ("T", "t"), states
    assert states[1] in ("S", "R"), states


def test_static_go_binary_is_redirected(tmp_path, fake):
    from k3snb.tracing._demo import build_static_go, is_static

    try:
        goread = build_static_go(tmp_path / "go")
    except Exception as e:  # no toolchain on this machine
        pytest.skip(f"no Go toolchain: {e}")
    assert is_static(goread)
    r = intercept([str(goread), KEY], [Rule.redirect("/proc/sys/", str(fake) + "/")])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == FAKE
    assert r.stats["tasks"] > 1  # Go threads were followed


def test_new_namespaces_are_followed(fake):
    r = intercept(f"unshare -m -p -f -U -r sh -c \"sh -c 'echo pid=$$; cat {KEY}'\"",
                  [Rule.redirect(KEY, str(fake / "kernel" / "cap_last_cap"))])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["pid=2", FAKE] or r.stdout.split()[-1] == FAKE
    assert r.stats["rewrites"] == 1


RESTART_C = r"""
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static volatile int hits;
static void h(int s) { volatile char junk[8192]; for (int i = 0; i < 8192; i++) junk[i] = 0x5a; hits += junk[100] == 0x5a; }
int main(int argc, char **argv) {
    struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = h; sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, 0);
    int fd = open(argv[1], O_RDONLY);  /* blocks on the FIFO while signals arrive */
    if (fd < 0) { perror("open"); return 1; }
    char b[16] = {0}; read(fd, b, sizeof b - 1); printf("%s hits=%d\n", b, hits); return 0;
}
"""


def test_erestartsys_restart_sees_the_rewritten_path(tmp_path):
    # a signal interrupts open() on a redirected FIFO; SA_RESTART re-executes it: the argument
    # register must hold the *original* pointer again (restored at the exit stop), or the restarted
    # call reads whatever the signal frame wrote over our scratch string
    import shutil

    if not shutil.which("gcc"):
        pytest.skip("gcc missing")
    (tmp_path / "r.c").write_text(RESTART_C)
    subprocess.run(["gcc", "-O1", "-o", str(tmp_path / "r"), str(tmp_path / "r.c")], check=True)
    fifo = tmp_path / "real-fifo"
    os.mkfifo(fifo)
    cmd = (f"{tmp_path}/r /k3snb-virtual-fifo & p=$!; sleep 0.3; for i in 1 2 3 4 5; do kill -USR1 $p; "
           f"sleep 0.05; done; echo payload > {fifo}; wait $p")
    r = intercept(cmd, [Rule.redirect("/k3snb-virtual-fifo", str(fifo))])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("payload") and "hits=5" in r.stdout
    assert r.stats["rewrites"] >= 2  # rewritten again at each restart


REGS_C = r"""
#include <stdio.h>
int main(int argc, char **argv) {
    const char *path = argv[1], *after; long ret;
    /* openat(AT_FDCWD, path, O_RDONLY): the kernel preserves rsi, so compiled code may reuse it */
    __asm__ volatile ("syscall" : "=a"(ret), "=S"(after)
                      : "a"(257), "D"(-100), "S"(path), "d"(0) : "rcx", "r11", "memory");
    printf("fd_ok=%d same_rsi=%d\n", ret >= 0, after == path);
    return 0;
}
"""


@pytest.mark.parametrize("seccomp", MODES)
def test_argument_register_is_restored_after_rewrite(tmp_path, fake, seccomp):
    import shutil

    if not shutil.which("gcc"):
        pytest.skip("gcc missing")
    (tmp_path / "regs.c").write_text(REGS_C)
    subprocess.run(["gcc", "-O1", "-o", str(tmp_path / "regs"), str(tmp_path / "regs.c")], check=True)
    r = intercept([str(tmp_path / "regs"), "/k3snb-virtual/kernel/cap_last_cap"],
                  [Rule.redirect("/k3snb-virtual/", str(fake) + "/")], seccomp=seccomp)
    assert r.stdout.strip() == "fd_ok=1 same_rsi=1", r.stdout + r.stderr
    assert r.stats["rewrites"] == 1


def test_rules_json_roundtrip_and_bad_input(tmp_path):
    rules = [Rule.redirect("/proc/sys/", "/tmp/x/"), Rule.fake("/proc/sys/kernel/panic", "10"),
             Rule.statfs("ext4", from_type="9p"), Rule.fail("EPERM", syscalls=["unshare"])]
    p = save_rules(tmp_path / "rules.json", rules)
    assert load_rules(p) == rules
    with pytest.raises(InvalidParameter, match="absolute"):
        Rule.redirect("proc/sys", "/x")
    with pytest.raises(InvalidParameter, match="unknown errno"):
        Rule.fail("ENOPE", path="/x")
    with pytest.raises(InvalidParameter, match="unknown syscall"):
        Rule.fail("EPERM", syscalls=["unshar"])
    with pytest.raises(InvalidParameter, match="filesystem type"):
        Rule.statfs("zfsx", from_type="9p")
    with pytest.raises(InvalidParameter, match="not a Rule"):
        intercept("true", ["/a=/b"])
    r = subprocess.run([sys.executable, "-m", "k3snb.tracing", "intercept", "--", "/nonexistent/cmd"],
                       capture_output=True, text=True)
    assert r.returncode == 125 and "not executable" in r.stderr


def test_cli_intercept_with_rules_file_and_log(tmp_path, fake):
    rules = save_rules(tmp_path / "r.json", [Rule.redirect("/proc/sys/", str(fake) + "/")])
    log = tmp_path / "icept.log"
    r = subprocess.run([sys.executable, "-m", "k3snb.cli", "intercept", "--rules", str(rules), "--log", str(log),
                        "--", "sh", "-c", f"cat {KEY}; exit 3"], capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    assert r.stdout.strip() == FAKE
    assert f"{KEY} -> {fake}/kernel/cap_last_cap" in log.read_text()


def test_linger_kills_descendants_left_behind(tmp_path):
    pidf = tmp_path / "pid"
    t0 = time.monotonic()
    r = intercept(f"sleep 30 & echo $! > {pidf}; exit 4", linger=0.5)
    assert r.returncode == 4 and time.monotonic() - t0 < 10
    assert not _alive(int(pidf.read_text()))


@pytest.mark.root
def test_long_running_spawn_in_a_runner_logs_and_stops_cleanly(fake):
    # the k3s launcher's recipe: the tracer in the background via runner.spawn, rules from JSON
    from k3snb.runners.host import Host

    with Host() as h:
        rules = save_rules(h.workdir / "rules.json", [Rule.redirect(KEY, str(fake / "kernel" / "cap_last_cap"))])
        log, out, meta = h.workdir / "icept.log", h.workdir / "out", h.workdir / "meta.json"
        p = h.spawn([h.python, "-m", "k3snb.tracing", "intercept", "--rules", str(rules), "--log", str(log),
                     "--meta", str(meta), "--",
                     "sh", "-c", f"trap 'exit 3' TERM; cat {KEY} > {out}; while :; do sleep 0.1; done"])
        assert _wait_file(out) == FAKE
        assert p.poll() is None
        p.terminate(grace=10)  # SIGTERM to the process group (the runner's nsenter client dies of it)
        # the command got SIGTERM, ran its trap, and the tracer recorded its own status: 3
        assert json.loads(_wait_file(meta))["returncode"] == 3
        assert "openat /proc/sys/kernel/cap_last_cap -> " in log.read_text()


def test_redirect_of_a_directory_takes_its_subtree_and_of_a_file_only_the_file(tmp_path):
    fake = tmp_path / "fake"
    (fake / "kernel").mkdir(parents=True)
    (fake / "kernel" / "panic").write_text("4242\n")
    (tmp_path / "panic").write_text("4343\n")
    real_oops = Path("/proc/sys/kernel/panic_on_oops").read_text().strip()
    # a directory source without a trailing slash: the whole subtree, as a bind mount would
    r = subprocess.run([sys.executable, "-m", "k3snb", "intercept", "--redirect", f"/proc/sys={fake}", "--",
                        "cat", "/proc/sys/kernel/panic"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "4242"), r.stderr
    assert intercept("ls /proc/sys", [Rule.redirect("/proc/sys", str(fake))]).stdout.split() == ["kernel"]
    assert intercept("cat /proc/sys/kernel/panic", [Rule.redirect("/proc/sys/", f"{fake}/")]).stdout.strip() == "4242"
    # a file source: that file only; its siblings and names sharing its prefix stay real
    r = intercept("cat /proc/sys/kernel/panic /proc/sys/kernel/panic_on_oops",
                  [Rule.redirect("/proc/sys/kernel/panic", str(tmp_path / "panic"))])
    assert r.stdout.split() == ["4343", real_oops]
    # forced: prefix=False keeps a directory source exact
    r = intercept("cat /proc/sys/kernel/panic_on_oops", [Rule.redirect("/proc/sys", str(fake), prefix=False)])
    assert r.stdout.strip() == real_oops
    assert Rule.redirect("/proc/sys", "/x").subtree and not Rule.redirect("/proc/sys/kernel/panic", "/x").subtree
    assert load_rules(save_rules(tmp_path / "r.json", [Rule.redirect("/proc/sys", "/x", prefix=False)]))[0].prefix is False
