"""Host runner against the real kernel: private mount/uts/pid namespaces that never leak."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers import procs_with

import k3snb
from k3snb.errors import InvalidParameter, RemoteError, SandboxError
from k3snb.runners.host import Host

pytestmark = pytest.mark.root


def _host_mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


@pytest.fixture(scope="module")
def host():
    with Host() as h:
        yield h


def test_mount_persists_inside_but_not_on_host(host):
    mnt = host.workdir / "mnt-persist"
    mnt.mkdir()
    assert host.run(f"mount -t tmpfs k3snb-probe-tmpfs {mnt} && echo hello > {mnt}/f").returncode == 0
    later = host.run(f"cat {mnt}/f; grep -c k3snb-probe-tmpfs /proc/self/mountinfo")
    assert later.stdout.split() == ["hello", "1"]
    assert "k3snb-probe-tmpfs" not in _host_mounts()
    assert not (mnt / "f").exists()  # the host sees the empty directory under the mount


def test_hostname_stays_inside(host):
    before = os.uname().nodename
    assert host.run("hostname k3snb-inner-host").ok
    assert host.run("hostname").stdout.strip() == "k3snb-inner-host"
    assert os.uname().nodename == before


def test_pid_namespace(host):
    # pid-ns: the command sees itself with a small pid, pid 1 is the holder's init
    r = host.run("echo $$; cat /proc/1/cmdline | tr '\\0' ' '")
    pid, init = r.stdout.splitlines()
    assert int(pid) < 100 and "k3snb-host-ready" in init


def test_exit_codes_stdin_env_cwd(host):
    assert host.run("exit 7").returncode == 7
    assert host.run(["false"]).returncode == 1
    assert host.run("cat", input="piped").stdout == "piped"
    assert host.run("echo $K3SNB_X", env={"K3SNB_X": "y"}).stdout == "y\n"
    assert host.run("pwd", cwd="/usr").stdout == "/usr\n"
    assert host.run("pwd").stdout.strip() == str(host.workdir)
    with pytest.raises(k3snb.errors.CommandFailed, match="exited 3"):
        host.run("echo boom >&2; exit 3", check=True)


def test_timeout_returns(host):
    t = time.monotonic()
    r = host.run("sleep 30", timeout=0.5)
    assert r.timed_out and r.returncode is None and not r.ok
    assert time.monotonic() - t < 5


def test_background_child_holding_the_pipe_does_not_block(host):
    # `cmd &` keeps stdout open after the shell exits; run() waits for the process, not for EOF
    t = time.monotonic()
    r = host.run("echo before; sleep 4949 & echo after")
    assert (r.returncode, r.stdout, r.timed_out) == (0, "before\nafter\n", False)
    assert time.monotonic() - t < 5
    assert procs_with("sleep\x004949")  # still running inside until the runner closes
    host.run("pkill -f 'sleep 4949'")


def test_run_python_value_and_remote_error(host):
    assert host.run_python(os.getpid) < 100  # ran inside the pid namespace
    assert host.run_python(os.path.join, "a", "b") == "a/b"
    with pytest.raises(RemoteError) as e:
        host.run_python(os.listdir, "/definitely-not-here")
    assert "FileNotFoundError" in str(e.value) and "Traceback" in str(e.value)


def test_copy_in_out(host, tmp_path):
    src = tmp_path / "d"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "x.txt").write_text("payload")
    host.copy_in(src, "/tmp/k3snb-copy-test/d")  # /tmp inside is the host's /tmp: clean it up
    try:
        assert host.run("cat /tmp/k3snb-copy-test/d/sub/x.txt").stdout == "payload"
        out = host.copy_out("/tmp/k3snb-copy-test/d", tmp_path / "back")
        assert (out / "sub" / "x.txt").read_text() == "payload"
    finally:
        host.run("rm -rf /tmp/k3snb-copy-test")


def test_spawn_and_terminate(host):
    sp = host.spawn("echo started; exec sleep 4242")
    deadline = time.monotonic() + 5
    while "started" not in sp.stdout_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sp.poll() is None and procs_with("sleep\x004242")
    rc = sp.terminate(grace=5)
    assert rc is not None and sp.poll() is not None
    assert not procs_with("sleep\x004242")


def test_close_kills_everything_and_removes_workdir():
    h = Host().start()
    work = h.workdir
    h.spawn("exec sleep 4343")
    h.run("sleep 4344 >/dev/null 2>&1 &")  # a daemon-like orphan inside the pid namespace
    time.sleep(0.2)
    assert procs_with("sleep\x004343") and procs_with("sleep\x004344")
    h.close()
    h.close()  # idempotent
    assert not work.exists()
    deadline = time.monotonic() + 3
    while (procs_with("sleep\x004343") or procs_with("sleep\x004344")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not procs_with("sleep\x004343") and not procs_with("sleep\x004344")
    with pytest.raises(SandboxError):
        h.run("true")


def test_without_pid_namespace_close_still_ends_everything():
    with Host(pid=False, hostname="k3snb-nopid") as h:
        assert h.run_python(os.getpid) > 100 and h.run("hostname").stdout == "k3snb-nopid\n"
        h.run("sleep 5252 >/dev/null 2>&1 &")
        h.spawn("exec sleep 5253")
        time.sleep(0.2)
        assert procs_with("sleep\x005252") and procs_with("sleep\x005253")
    deadline = time.monotonic() + 3
    while procs_with("sleep\x00525") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not procs_with("sleep\x005252") and not procs_with("sleep\x005253")


def test_cleanup_on_exception():
    with pytest.raises(KeyboardInterrupt), Host() as h:
        work = h.workdir
        raise KeyboardInterrupt
    assert not work.exists() and not h.alive()


def test_user_namespace_mode():
    with Host(userns=True) as h:
        r = h.run("cat /proc/self/uid_map; mount -t tmpfs k3snb-userns-tmpfs /mnt && grep -c k3snb-userns /proc/self/mountinfo")
        assert r.ok, r.stderr
        assert r.stdout.split()[-1] == "1"
    assert "k3snb-userns-tmpfs" not in _host_mounts()


def test_bad_option_is_usage_error():
    with pytest.raises(InvalidParameter, match="unknown Host option") as e:
        Host(pidns=False)
    assert "valid options" in str(e.value)
    assert k3snb.get_runner("host").kind == "host"


def test_without_root_falls_back_to_a_user_namespace():
    # drop to nobody in a forked child (the stdlib lives under /root, so import before dropping)
    import json
    import shutil
    import tempfile

    # pytest's tmp_path sits below a root-only dir; nobody needs a traversable one
    shared = Path(tempfile.mkdtemp(prefix="k3snb-nonroot-test-"))
    shared.chmod(0o777)
    try:
        _nonroot_host(shared, json)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _nonroot_host(shared: Path, json) -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.environ.update(K3SNB_STATE=str(shared / "state"), K3SNB_TMP=str(shared / "tmp"))
            with Host() as h:
                res = h.run(f"id -u; mount -t tmpfs k3snb-nonroot {h.workdir} && grep -c k3snb-nonroot "
                            "/proc/self/mountinfo")
                out = {"userns": h.info()["userns"], "rc": res.returncode, "out": res.stdout}
        except BaseException as e:  # report, including NotRoot where user namespaces are off
            out = {"error": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    out = json.loads(data)
    if Path("/proc/sys/user/max_user_namespaces").read_text().strip() == "0":
        assert out["error"].startswith("NotRoot")
    else:
        assert out == {"userns": True, "rc": 0, "out": "0\n1\n"}  # root inside, mount works
    assert "k3snb-nonroot" not in _host_mounts()
    assert not any((shared / "tmp").iterdir()) and not any((shared / "state").iterdir())
