"""GVisor runner against real runsc builds: the sandbox looks like the target, dies visibly, cleans up."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import RUNSC, procs_with

import k3snb
from k3snb._state import records
from k3snb.errors import InvalidParameter, RemoteError, RunscMissing, SandboxDied, UsageError
from k3snb.runners import runsc as runsc_mod
from k3snb.runners.gvisor import DEAD_PATTERNS, GVisor, extract_panic, pids_with_root

pytestmark = [pytest.mark.root, pytest.mark.runsc]
BUILDS = ["2022", pytest.param("2024", marks=pytest.mark.runsc2024)]


def _snapshot() -> tuple[set, set, set]:
    """What the kit could leave behind: temp dirs, state records, runsc processes of our temp root."""
    tmp = {p.name for p in k3snb._paths.tmp_root().iterdir() if p.name.startswith("k3snb-gvisor-")}
    root = str(k3snb._paths.tmp_root())
    # only records of this test session (a study may run alongside with the default temp root)
    recs = {r.id for r in records() if r.kind == "gvisor" and any(p.startswith(root) for p in r.paths)}
    procs = set(procs_with(str(k3snb._paths.tmp_root()), RUNSC))
    return tmp, recs, procs


def _assert_gone(g: GVisor, base: Path) -> None:
    assert not base.exists()
    assert not pids_with_root(str(base / "state"))
    assert g.id not in {r.id for r in records()}
    assert not any(Path("/sys/fs/cgroup").glob(f"*/{g.id}*"))


@pytest.fixture(scope="module", params=BUILDS)
def sandbox(request):
    with GVisor(request.param) as g:
        yield g


def test_looks_like_the_target(sandbox):
    assert sandbox.run("uname -r").stdout.strip() == "4.4.0"
    # statfs magic of / : V9FS_MAGIC (busybox stat, coreutils trips over gVisor's statx)
    assert sandbox.run("busybox stat -f -c %t /").stdout.strip() == "1021997"
    assert sandbox.run(["busybox", "stat", "-f", "-c", "%t", "/tmp"]).stdout.strip() == "1021994"  # tmpfs
    assert os.path.exists("/dev/kmsg") and os.path.exists("/proc/sys/kernel/panic")  # the host has them
    assert sandbox.run_python(os.path.exists, "/dev/kmsg") is False
    assert sandbox.run_python(os.path.exists, "/proc/sys/kernel/panic") is False
    assert sandbox.run_python(platform.release) == "4.4.0"


def test_exit_codes_are_results(sandbox):
    r = sandbox.run("echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr, r.sandbox_died) == (7, "out\n", "err\n", False)
    assert sandbox.run(["false"]).returncode == 1
    assert sandbox.run("cat", input=b"\x00bytes").stdout == "\x00bytes"
    assert sandbox.run("echo $K3SNB_X", env={"K3SNB_X": "1"}).stdout == "1\n"
    assert sandbox.run("pwd", cwd="/usr").stdout == "/usr\n"
    with pytest.raises(k3snb.errors.CommandFailed):
        sandbox.run("exit 2", check=True)


def test_writable_places_and_shared_workdir(sandbox):
    assert sandbox.run("touch /usr/k3snb-ro-probe").returncode != 0  # host root is read-only
    (sandbox.workdir / "from-host").write_text("h\n")
    r = sandbox.run(f"cat {sandbox.workdir}/from-host && echo g > {sandbox.workdir}/from-guest && echo $HOME")
    assert r.stdout.startswith("h") and (sandbox.workdir / "from-guest").read_text() == "g\n"
    home = r.stdout.splitlines()[-1]
    # (a name no checkout uses: a kit checked out under /tmp is bound read-only at its own path)
    assert sandbox.run(f"touch {home}/x /tmp/k3snb-write-probe && echo ok").stdout == "ok\n"


def test_copy_in_out(sandbox, tmp_path):
    src = tmp_path / "d"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "x.txt").write_text("payload")
    assert sandbox.copy_in(src, "/tmp/in/d") == "/tmp/in/d"  # /tmp inside is the sandbox's own tmpfs
    assert sandbox.run("cat /tmp/in/d/sub/x.txt").stdout == "payload"
    assert not (Path("/tmp/in/d")).exists()
    back = sandbox.copy_out("/tmp/in/d", tmp_path / "back")
    assert (back / "sub" / "x.txt").read_text() == "payload"


def test_run_python_and_remote_error(sandbox):
    assert sandbox.run_python(os.getpid) < 100  # inside the sandbox's pid namespace
    with pytest.raises(RemoteError, match="FileNotFoundError"):
        sandbox.run_python(os.listdir, "/definitely-not-here")


def test_timeout_kills_command_and_does_not_hang(sandbox):
    t = time.monotonic()
    r = sandbox.run("echo started; sleep 300", timeout=1)
    assert r.timed_out and not r.sandbox_died and time.monotonic() - t < 6
    ps = sandbox.run("busybox ps -o stat,args").stdout
    assert "sleep 300" not in ps  # killed, and reaped by the init (no zombie)
    assert sandbox.run("echo still-usable").stdout == "still-usable\n"


def test_background_child_holding_the_pipe_does_not_block(sandbox):
    t = time.monotonic()
    r = sandbox.run("echo before; sleep 5151 & echo after")
    assert (r.returncode, r.stdout, r.timed_out, r.sandbox_died) == (0, "before\nafter\n", False, False)
    assert time.monotonic() - t < 5
    assert "sleep 5151" in sandbox.run("busybox ps -o args").stdout
    sandbox.run("busybox pkill -f 'sleep 5151'")


def test_spawn_and_terminate(sandbox):
    sp = sandbox.spawn("echo up; exec sleep 4545")
    deadline = time.monotonic() + 10
    while "up" not in sp.stdout_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sp.stdout_path.read_text() == "up\n" and sp.poll() is None
    assert "sleep 4545" in sandbox.run("busybox ps -o args").stdout
    assert sp.terminate(grace=5) is not None
    assert "sleep 4545" not in sandbox.run("busybox ps -o args").stdout


def test_spawn_one_log_for_both_streams_appends(sandbox):
    log = sandbox.workdir / "daemon.log"
    log.write_text("earlier run\n")
    sp = sandbox.spawn("for i in 1 2 3; do echo out$i; echo err$i >&2; done; echo $K3SNB_Y; pwd",
                       stdout=log, stderr=log, env={"K3SNB_Y": "env-ok"}, cwd="/usr")
    assert sp.wait(20) == 0
    assert log.read_text() == "earlier run\nout1\nerr1\nout2\nerr2\nout3\nerr3\nenv-ok\n/usr\n"


def test_info_records_version(sandbox):
    pids = sandbox.host_pids()
    assert set(pids) == {"runsc", "sandbox", "gofer"} and all(Path(f"/proc/{p}").exists() for p in pids.values())
    info = sandbox.info()
    assert info["kind"] == "gvisor" and info["runsc_version"].startswith("0.0~20")
    assert sandbox.run("true").extra["runsc_version"] == info["runsc_version"]  # recorded with every result
    assert Path(info["runsc"]).is_file() and "--network=none" in info["flags"]

def test_net_raw_reaches_exec_processes():
    # legacy iptables needs CAP_NET_RAW in the exec'd process, not only in the sandbox init
    with GVisor(net_raw=True) as g:
        eff = int(g.run("awk '/CapEff/{print $2}' /proc/self/status").check().stdout, 16)
        assert eff & (1 << 13), f"CAP_NET_RAW missing: {eff:#x}"
        r = g.run("iptables-legacy -t nat -N KUBE-PROBE && iptables-legacy -t nat -S KUBE-PROBE")
        assert r.ok and "-N KUBE-PROBE" in r.stdout, r.stderr
    with GVisor() as g:
        eff = int(g.run("awk '/CapEff/{print $2}' /proc/self/status").check().stdout, 16)
        assert not eff & (1 << 13)



@pytest.mark.parametrize("build", BUILDS)
def test_killed_sandbox_is_reported_and_closable(build):
    g = GVisor(build).start()
    base = g.workdir.parent
    try:
        assert g.run("true").ok
        sandbox_pid = g.host_pids()["sandbox"]
        os.kill(sandbox_pid, signal.SIGKILL)
        t = time.monotonic()
        r = g.run("echo hi")
        assert r.sandbox_died and not r.ok and r.crash
        assert time.monotonic() - t < 30  # noticed at once, not after the 600 s command timeout (generous: CI load)
        assert not g.alive()
        with pytest.raises(SandboxDied):
            g.run("true", check=True)
    finally:
        g.close()
    _assert_gone(g, base)


@pytest.mark.parametrize("build", BUILDS)
def test_sentry_panic_text_is_the_crash(build):
    # a real sentry panic: runsc's --panic-signal makes the sandbox panic on SIGUSR2
    with GVisor(build, runsc_flags=["--panic-signal=12"]) as g:
        sandbox_pid = g.host_pids()["sandbox"]
        os.kill(sandbox_pid, signal.SIGUSR2)
        r = g.run("echo hi")
        assert r.sandbox_died
        assert "panic: Signal-induced panic" in r.crash and "goroutine" in r.crash
        assert "Signal-induced panic" in r._repr_html_()


def test_dead_while_running_is_detected():
    with GVisor() as g:
        victim = g.host_pids()["sandbox"]
        threading.Timer(0.5, os.kill, (victim, signal.SIGKILL)).start()
        t = time.monotonic()
        r = g.run("sleep 60", timeout=30)
        assert r.sandbox_died and time.monotonic() - t < 5


def test_cleanup_after_with_exception_and_keyboardinterrupt():
    before = _snapshot()
    with GVisor() as g:
        base = g.workdir.parent
        g.spawn("exec sleep 4646")
        assert g.run("true").ok
    _assert_gone(g, base)
    with pytest.raises(RuntimeError), GVisor() as g:
        base = g.workdir.parent
        raise RuntimeError("boom")
    _assert_gone(g, base)
    with pytest.raises(KeyboardInterrupt), GVisor() as g:
        base = g.workdir.parent
        # Ctrl-C in the middle of a command: SIGINT to this (main) thread while run() waits
        threading.Timer(0.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
        g.run("sleep 60")
    _assert_gone(g, base)
    assert _snapshot() == before


@pytest.mark.parametrize("delay", [0.02, 0.08, 0.15])
def test_keyboardinterrupt_during_start_leaves_nothing(delay):
    before = _snapshot()
    g = GVisor()
    timer = threading.Timer(delay, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    in_start = False
    try:
        try:
            g.start()
        except KeyboardInterrupt:
            in_start = True
        else:
            time.sleep(2)  # start won the race: the interrupt lands here instead
    except KeyboardInterrupt:
        pass
    finally:
        timer.join()
    if in_start:  # start() must have cleaned up by itself
        assert _snapshot() == before
    g.close()
    assert _snapshot() == before
    assert not any(Path("/sys/fs/cgroup").glob(f"*/{g.id}*"))


def test_caps_option():
    with GVisor(caps=False) as g:
        assert g.run("grep CapEff /proc/self/status").stdout.split()[1] == "0000000000000000"
        assert g.run("mount -t tmpfs none /mnt").returncode != 0
    with GVisor(caps=["SYS_ADMIN"], net_raw=True) as g:
        assert g.run("mount -t tmpfs none /mnt && echo mounted").stdout == "mounted\n"


@pytest.mark.parametrize("build", BUILDS)
def test_network_modes(build):
    host_ifaces = set(os.listdir("/sys/class/net"))
    with GVisor(build) as g:  # none: netstack with lo only
        assert _ifaces(g) == {"lo"}
    with GVisor(build, network="host") as g:  # hostinet: the host's interfaces
        assert _ifaces(g) == host_ifaces
    with GVisor(build, network="sandbox") as g:  # netstack on a private netns (gvisor-matrix §3 workaround)
        assert "--network=sandbox" in g.info()["flags"]
        assert _ifaces(g) == {"lo"}
        sb = g.host_pids()["sandbox"]
        assert os.readlink(f"/proc/{sb}/ns/net") != os.readlink("/proc/self/ns/net")
        r = g.run(["python3", "-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
                   "socket.create_connection(s.getsockname()); print('tcp-ok')"])
        assert r.stdout == "tcp-ok\n", r.stderr
        base = g.workdir.parent
    _assert_gone(g, base)
    assert "k3snb-procsys" not in Path("/proc/self/mountinfo").read_text()


def _ifaces(g: GVisor) -> set[str]:
    lines = g.run("cat /proc/net/dev", check=True).stdout.splitlines()[2:]
    return {ln.split(":")[0].strip() for ln in lines}


@pytest.mark.parametrize(
    ("kwargs", "exc", "text"),
    [
        ({"runsc": "2023"}, InvalidParameter, "unknown runsc version '2023'"),
        ({"runsc": "/nonexistent/runsc"}, RunscMissing, "does not exist"),
        ({"bogus": 1}, InvalidParameter, "unknown GVisor option"),
        ({"network": "bridge"}, InvalidParameter, "unknown network"),
        ({"platform": "kvmm"}, InvalidParameter, "unknown platform"),
        ({"binds": ["relative:/x"]}, InvalidParameter, "absolute"),
        ({"runsc_flags": "--debug"}, InvalidParameter, "list of flags"),
        ({"caps": ["SYS_NOPE"]}, InvalidParameter, "unknown capability"),
    ],
)
def test_bad_input_is_one_usage_error(kwargs, exc, text):
    before = _snapshot()
    with pytest.raises(exc, match=text) as e:
        GVisor(**kwargs)
    assert isinstance(e.value, UsageError) and e.value.hint
    assert _snapshot() == before


def test_bad_runsc_flag_fails_start_cleanly():
    before = _snapshot()
    with pytest.raises(k3snb.errors.SandboxError, match="could not create") as e:
        GVisor(runsc_flags=["--no-such-flag"], start_retries=1).start()
    assert "no-such-flag" in str(e.value) and "(2 attempts)" in str(e.value)
    assert _snapshot() == before


def test_not_root_is_one_clear_error():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, never return into pytest
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            GVisor()
            msg = "no error"
        except BaseException as e:
            msg = f"{type(e).__name__}|{e}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    msg = os.read(r, 65536).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert msg.startswith("NotRoot|runsc needs root") and "fix: run as root" in msg


# -- runsc discovery ------------------------------------------------------------------------------


def test_find_runsc_and_version():
    p = runsc_mod.find_runsc("2022")
    assert p == runsc_mod.find_runsc(None) and runsc_mod.runsc_version(p).startswith("0.0~2022")
    assert runsc_mod.find_runsc(str(p)) == p
    table = runsc_mod.list_runsc_builds()
    assert table.rows[0]["build"] == "2022" and table.rows[0]["available"]
    assert "runsc builds" in table._repr_html_()


@pytest.mark.runsc2024
def test_runsc_2024_in_cache():
    p = runsc_mod.find_runsc("2024")
    assert p == runsc_mod.cached_runsc_path("2024") and runsc_mod.runsc_version(p) == "0.0~20240729.0"
    # fetch is idempotent: present -> returns at once without apt
    t = time.monotonic()
    assert runsc_mod.fetch_runsc_2024(quiet=True) == p and time.monotonic() - t < 2


@pytest.mark.runsc2024
def test_fetch_entry_point_is_idempotent():
    r = subprocess.run([sys.executable, "-m", "k3snb.runners.runsc", "fetch"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and str(runsc_mod.cached_runsc_path("2024")) in r.stdout
    assert "fetching" not in r.stderr  # present: no apt run at all


def test_fetch_without_mirror_is_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("K3SNB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "etc" / "sources.list.d").mkdir(parents=True)
    with pytest.raises(RunscMissing, match="no Debian mirror found") as e:
        runsc_mod.fetch_runsc_2024(etc=tmp_path / "etc", quiet=True)
    assert e.value.hint
    assert not runsc_mod.cached_runsc_path("2024").exists()
    with pytest.raises(RunscMissing, match="not in the kit cache"):
        runsc_mod.find_runsc("2024")


@pytest.mark.slow
def test_fetch_for_real_into_a_fresh_cache(tmp_path, monkeypatch):
    # the real apt recipe, into a private cache; the system's apt state must not change
    def apt_state():
        out = {}
        for d in ("/etc/apt", "/var/lib/apt/lists", "/var/cache/apt"):
            for p in Path(d).rglob("*"):
                if p.is_file():
                    out[str(p)] = p.stat().st_mtime_ns
        return out

    monkeypatch.setenv("K3SNB_CACHE", str(tmp_path / "cache"))
    before = apt_state()
    p = runsc_mod.fetch_runsc_2024(quiet=True)
    assert p == tmp_path / "cache" / "runsc" / "20240729" / "runsc"
    assert runsc_mod.runsc_version(p) == "0.0~20240729.0"
    assert (p.parent / "provenance.json").is_file()
    assert apt_state() == before
    assert not list(Path(k3snb._paths.tmp_root()).glob("k3snb-aptfetch-*"))


def test_apt_source_parsing(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "a.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://off.invalid/\nSuites: trixie\nComponents: main\n")
    (tmp_path / "sources.list").write_text("deb [arch=amd64 signed-by=/k.gpg] http://one.invalid/d bookworm main\n")
    srcs = runsc_mod.apt_sources(tmp_path)
    assert [s.uri for s in srcs] == ["http://mirror.invalid/debian-security", "http://mirror.invalid/debian",
                                     "http://one.invalid/d"]
    m = runsc_mod.debian_mirror(tmp_path)
    assert m.uri == "http://mirror.invalid/debian" and m.signed_by.endswith("debian-archive-keyring.gpg")
    assert runsc_mod.debian_mirror(tmp_path / "nowhere") is None
    # the machine's real configuration has one (fetch relies on it)
    assert runsc_mod.debian_mirror() is not None


def test_extract_panic_from_log_text():
    log = ("I1128 boot.go:1] starting\n"
           "panic: running on goroutine 77 (task goroutine for kernel.Task 0xc000 is 12)\n\n"
           "goroutine 77 [running]:\ngvisor.dev/gvisor/pkg/sentry/kernel.(*Task).assertTaskGoroutine(...)\n")
    text = extract_panic(["nothing here\n", log])
    assert text.splitlines()[1].startswith("panic: running on goroutine 77")
    assert "assertTaskGoroutine" in text
    assert extract_panic(["I1128 all fine\n"]) is None


def test_kit_paths_under_tmpfs_are_bound_read_only(tmp_path, monkeypatch):
    from k3snb.runners import _oci

    venv = tmp_path / "repo" / ".venv"
    venv.mkdir(parents=True)
    binds = _oci.hidden_by_tmpfs([str(venv), str(tmp_path / "repo"), "/usr", "/nonexistent/x"])
    # the venv sits inside the repo: one read-only bind of the repo covers both; /usr is not hidden
    assert [(b.source, b.readonly) for b in binds] == [(str(tmp_path / "repo"), True)]
    # and inside a real sandbox a file there is visible although /tmp is a tmpfs, but not writable
    (tmp_path / "repo" / "marker").write_text("seen")
    import k3snb.runners.gvisor as gv

    monkeypatch.setattr(gv, "_kit_paths", lambda: [str(tmp_path / "repo")])
    with GVisor() as g:
        assert g.run(["cat", str(tmp_path / "repo" / "marker")]).check().stdout == "seen"
        assert not g.run(["touch", str(tmp_path / "repo" / "new")]).ok


@pytest.mark.runsc2024
def test_network_sandbox_when_the_runner_dirs_lie_in_a_kit_path(tmp_path, monkeypatch):
    # regression: the private /proc/sys bind of network="sandbox" once lived under the runner's own
    # dir; with that dir inside a kit path bound into the sandbox, runsc 2024's gofer failed (EINVAL)
    import k3snb.runners.gvisor as gv

    monkeypatch.setenv("K3SNB_TMP", str(tmp_path))
    monkeypatch.setattr(gv, "_kit_paths", lambda: [str(tmp_path)])
    with GVisor("2024", network="sandbox") as g:
        assert _ifaces(g) == {"lo"}


@pytest.mark.parametrize("build", BUILDS)
def test_starts_with_tmpdir_inside_a_private_folder(build, tmp_path, monkeypatch):
    """runsc 2022's sandbox drops privileges and could not reach a TMPDIR inside a 0700 folder
    ("cannot read client sync file"): `k3snb run` gives kernels TMPDIR=<run>/.k3snb-kit/tmp."""
    private = tmp_path / "private"
    (private / "tmp").mkdir(parents=True)
    private.chmod(0o700)
    monkeypatch.setenv("TMPDIR", str(private / "tmp"))
    with GVisor(build, start_retries=0) as g:
        assert g.run("echo inside").stdout.strip() == "inside"
        assert g.start_attempts == 1


@pytest.mark.parametrize("stderr", [
    # recorded from runsc 2024 when the sandbox was SIGKILLed at each point of an exec
    'waiting on pid 3: waiting on PID 3 in sandbox "k3snb-ce112ac3b9": urpc method "containerManager.WaitPID" '
    "failed: EOF",
    "loading sandbox: file does not exist",
    'executing processes for container: cannot execute in container "k3snb-952ab8af5e" in state stopped',
])
def test_runsc_messages_of_a_dead_sandbox_are_recognised(stderr):
    assert DEAD_PATTERNS.search(stderr)


@pytest.mark.parametrize("stderr", ["sleep: invalid number 'x'", "cannot execute binary file", "state stopped"])
def test_a_commands_own_errors_are_not_a_dead_sandbox(stderr):
    assert not DEAD_PATTERNS.search(stderr)
