"""Container runtimes driven by the kit against the real binaries (runc 1.1, crun 1.8, containerd 1.6):
images, the stage record, the CLI, and that nothing of a run is left behind (also after an
exception, Ctrl-C, and kill -9 + `k3snb doctor --clean`). Leftovers are looked up by the run's own
tag (containerd / runtime id), never machine-wide: other runs may use containerd at the same time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from helpers import host_version

from k3snb import images
from k3snb.errors import InvalidParameter, K3snbError, MissingDependency, UsageError
from k3snb.runtime import Attempt, Containerd, run_container
from k3snb.runtime.stages import STAGES, attribute, version_of

COMBOS = [("containerd", "runc"), ("containerd", "crun"), ("direct", "runc"), ("direct", "crun")]


def leftovers(tag: str) -> list[str]:
    """Processes (by command line or cgroup), dirs under /run, cgroup dirs and mounts naming ``tag``."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cg = Path(f"/proc/{d}/cgroup").read_text()
        except OSError:
            continue
        if tag in cmd or tag in cg:
            found.append(f"pid {d}: {cmd[:120]}")
    found += [str(p) for p in Path("/run").glob(f"{tag}*")]
    found += [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{tag}*")]
    found += [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if tag in ln]
    return found


# -- images ----------------------------------------------------------------------------------------
def test_images_are_content_addressed_and_valid_oci(tmp_path):
    b = images.busybox()
    assert b.ref == "k3snb.local/busybox:latest" and b.config["config"]["Cmd"] == ["sh"]
    assert images.busybox().digest == b.digest  # cached and stable
    with tarfile.open(b.archive) as tf:
        names = set(tf.getnames())
        layer = tf.extractfile(f"blobs/sha256/{b.layers[0]['digest'].split(':')[1]}")
        with tarfile.open(fileobj=layer) as lt:
            members = {m.name: m for m in lt.getmembers()}
    assert {"oci-layout", "index.json"} <= names
    assert members["bin/busybox"].isfile() and members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert len([m for m in members if m.startswith("bin/")]) > 100  # the usual applets
    # a directory → an image, on top of busybox; same content → same digest
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "hello.sh").write_text("echo from-dir\n")
    i1 = images.from_dir(tmp_path / "app", "demo", cmd=["sh", "/hello.sh"], base="busybox")
    i2 = images.from_dir(tmp_path / "app", "demo", cmd=["sh", "/hello.sh"], base="busybox")
    assert i1.digest == i2.digest and len(i1.layers) == 2
    (tmp_path / "app" / "hello.sh").write_text("echo changed\n")
    assert images.from_dir(tmp_path / "app", "demo", base="busybox").digest != i1.digest


def test_umoci_reads_the_archives(tmp_path):
    import shutil

    if not shutil.which("umoci"):
        pytest.skip("umoci not installed (apt-get install umoci)")
    for img in (images.busybox(), images.pause()):
        d = tmp_path / img.name
        d.mkdir()
        with tarfile.open(img.archive) as tf:
            tf.extractall(d)
        out = subprocess.run(["umoci", "stat", "--image", f"{d}:latest"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_pause_reaps_and_exits_zero_on_sigterm(tmp_path):
    p = images.pause()
    with tarfile.open(p.archive) as tf:
        layer = tf.extractfile(f"blobs/sha256/{p.layers[0]['digest'].split(':')[1]}")
        with tarfile.open(fileobj=layer) as lt:
            lt.extract("pause", tmp_path)
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen([str(tmp_path / "pause")])
        time.sleep(0.2)
        assert proc.poll() is None  # it waits
        proc.send_signal(sig)
        assert proc.wait(5) == 0


@pytest.mark.root
def test_pause_as_pid1_reaps_orphans(tmp_path):
    from k3snb._procfs import children

    p = images.pause()
    with tarfile.open(p.archive) as tf:
        layer = tf.extractfile(f"blobs/sha256/{p.layers[0]['digest'].split(':')[1]}")
        with tarfile.open(fileobj=layer) as lt:
            lt.extract("pause", tmp_path)
    holder = subprocess.Popen(["unshare", "-pf", "--mount-proc", str(tmp_path / "pause")])
    try:
        time.sleep(0.3)
        init = children(holder.pid)[0]  # pause, PID 1 of the new pid namespace
        # the shell exits at once: its background sleep is re-parented to pause, which must reap it
        subprocess.run(["nsenter", "-t", str(init), "-p", "-m", "sh", "-c", "sleep 0.3 & exit 0"], check=True)
        time.sleep(1.0)
        kids = children(init)
        states = [Path(f"/proc/{k}/stat").read_text().split(")")[1].split()[0] for k in kids]
        assert "Z" not in states
        os.kill(init, signal.SIGTERM)
        assert holder.wait(5) == 0
    finally:
        if holder.poll() is None:
            holder.kill()


def test_bad_images_are_usage_errors(tmp_path):
    with pytest.raises(InvalidParameter, match="not found"):
        images.get_image(tmp_path / "missing.tar")
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar")
    with pytest.raises(InvalidParameter, match="not a valid OCI image archive"):
        images.get_image(bad)
    with pytest.raises(InvalidParameter, match="unknown image"):
        images.get_image("nginx")


@pytest.mark.root
def test_unreadable_dir_content_is_a_usage_error_not_a_smaller_image():
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="k3snb-R-img-", dir="/tmp"))  # 0755 path: nobody reaches it
    try:
        d.chmod(0o755)
        (d / "ok").mkdir()
        (d / "ok" / "a").write_text("hi\n")
        (d / "secret").mkdir(mode=0o700)
        (d / "secret" / "b").write_text("s\n")
        code = ("from k3snb.images import from_dir\nfrom k3snb.errors import InvalidParameter\n"
                f"try:\n    from_dir({str(d)!r}, 'x')\nexcept InvalidParameter as e:\n    print('ERR', e.msg)\n")
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": "/tmp"})
        assert r.stdout.startswith("ERR cannot read") and "secret" in r.stdout, r.stdout + r.stderr
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=True)


# -- stage model ---------------------------------------------------------------------------------
def test_attribution_and_record_order():
    assert attribute("failed to extract layer sha256:x: failed to mount /a/tmpmounts/containerd-mount1: "
                     "invalid argument", "layer_unpacked") == "layer_unpacked"
    assert attribute("runc run failed: mountpoint for devices not found", "container_created") == "container_created"
    assert attribute("nsexec[1]: failed to setns into pid namespace: Invalid argument",
                     "container_created") == "runtime_init"
    assert attribute('exec: "nope": executable file not found in $PATH', "container_created") == "process_execd"
    assert attribute("something unknown", "container_created") == "container_created"
    a = Attempt("host", "runc", "direct", "busybox", ["true"])
    a.passed("runtime_up", 0.1)
    a.fail("container_created", "error during container init: pivot_root invalid argument")
    a.finish()
    assert [s["stage"] for s in a.stages] == list(STAGES)
    st = {s["stage"]: s["status"] for s in a.stages}
    assert a.failed_stage == "pivot_root" and st["runtime_init"] == "ok" and st["process_execd"] == "not reached"
    assert not a.ok and "pivot_root failed" in a._repr_text() and "pivot_root" in a._repr_html_()
    assert list(a.to_frame().columns[:3]) == ["stage", "status", "seconds"]


# -- real runs -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host():
    from k3snb.runners.host import Host

    with Host() as h:
        yield h


@pytest.fixture(scope="module")
def gvisor2024():
    from k3snb.runners.gvisor import GVisor

    with GVisor("2024") as g:
        yield g


def test_version_of_names_the_runtime_and_the_daemon_not_the_client_or_go():
    for prog in ("runc", "crun"):  # the real outputs: the version is on the first line, "go: go1.x" is not it
        out = subprocess.run([prog, "--version"], capture_output=True, text=True, timeout=30).stdout
        assert version_of(out) == host_version(prog)
    ctr = "Client:\n  Version:  1.6.20~ds1\n  Go version: go1.19.8\n\nServer:\n  Version:  1.7.0\n  UUID: x\n"
    assert version_of(ctr) == "1.7.0"  # the daemon's, which runs the containers
    assert version_of(ctr.split("Server:")[0]) is None  # no daemon answered: not recorded, not the client's
    assert version_of("") is None and version_of("usage: runc") is None


def _check_ran(a: Attempt) -> None:
    assert a.ok, (a.failed_stage, a.error, a.stderr[-500:])
    assert a.stdout == "hello\n0\n" and a.returncode == 3
    assert [s["status"] for s in a.stages] == ["ok"] * len(STAGES)
    assert not leftovers(a.info["id"])
    # the versions that ran, read inside the runner: the runtime's, and containerd's only via containerd
    assert a.versions.get(a.runtime) == host_version(a.runtime)
    assert a.versions.get("containerd") == (host_version("containerd") if a.via == "containerd" else None)


@pytest.mark.root
@pytest.mark.parametrize("via,runtime", COMBOS)
def test_busybox_runs_on_host(host, via, runtime):
    a = run_container(host, "busybox", ["sh", "-c", "echo hello; id -u; exit 3"], runtime=runtime, via=via)
    _check_ran(a)


@pytest.mark.root
@pytest.mark.runsc2024
@pytest.mark.parametrize("via,runtime", COMBOS)
def test_busybox_runs_in_gvisor_2024(gvisor2024, via, runtime):
    a = run_container(gvisor2024, "busybox", ["sh", "-c", "echo hello; id -u; exit 3"], runtime=runtime, via=via)
    _check_ran(a)
    assert a.cgroups["applied_by_kit"] and {"cpu", "memory", "pids", "devices"} <= set(a.cgroups["mounted"])
    if runtime == "crun":  # R05 is got past by the interceptor, and recorded as such
        assert any("setgroups" in r for r in a.info["rules"])
    # the v1 layout is reverted: the sandbox has no cgroup mounts again
    assert "cgroup" not in gvisor2024.run(["cat", "/proc/self/mountinfo"]).stdout


@pytest.mark.root
@pytest.mark.runsc
def test_gvisor_2022_records_stage_signature_and_syscall():
    from k3snb.runners.gvisor import GVisor

    with GVisor("2022") as g:
        a = run_container(g, "busybox", ["echo", "hi"], via="containerd", snapshotter="overlayfs", trace=True)
        d = run_container(g, "busybox", ["echo", "hi"], via="direct", runtime="runc")
    assert a.failed_stage == "layer_unpacked" and "invalid argument" in a.error and a.signature == "R01"
    sc = a.syscall
    assert sc["syscall"] == "mount" and sc["errno"] == "EINVAL" and "MS_BIND" in sc["flags"]
    assert sc["exe"].endswith("containerd")
    st = {s["stage"]: s["status"] for s in a.stages}
    assert st["image_imported"] == "ok" and st["container_created"] == "not reached"
    assert d.failed_stage == "container_created" and d.signature == "R03"  # no devices hierarchy in 2022
    # containerd served before the unpack failed: its version and runc's were read in the sandbox
    assert a.versions == {"containerd": host_version("containerd"), "runc": host_version("runc")}
    assert d.versions == {"runc": host_version("runc")}
    assert "devices" not in d.cgroups["mounted"]


# -- cleanup -------------------------------------------------------------------------------------
@pytest.mark.root
def test_exception_inside_containerd_leaves_nothing(host):
    with pytest.raises(RuntimeError, match="boom"), Containerd(host) as c:
        tag = c.id
        imp = c.import_image("busybox")
        assert imp.ok, imp.stderr + c.logs(20)
        r = c.ctr("run", "-d", "--runc-root", f"{c.run_dir}/runc-root", "--cgroup", f"{c.cgroup_parent}/x",
                  "k3snb.local/busybox:latest", f"{tag}-x", "sleep", "300")
        assert r.ok, r.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("sleep 300" in x for x in leftovers(tag)):
            time.sleep(0.2)
        assert any("sleep 300" in x for x in leftovers(tag))  # the container process runs, tagged
        raise RuntimeError("boom")
    assert not leftovers(tag)


@pytest.mark.root
def test_failed_start_without_with_leaves_nothing(host):
    c = Containerd(host)
    c.binary = "/bin/false"  # exits at once: start() fails after the record, dirs and process exist
    with pytest.raises(K3snbError, match="containerd exited"):
        c.start()
    assert not c.conf_dir.exists() and c.record is None and not leftovers(c.id)
    assert c.stop() == c.cleanup  # a second stop (e.g. __exit__) is a no-op


@pytest.mark.root
def test_config_probe_files_containerd_failures_and_lets_bugs_raise(host, monkeypatch, tmp_path):
    from k3snb.runtime import experiments as ex

    rows = ex.containerd_config_probe(["host"])
    assert [r["cri_plugin"] for r in rows] == ["ok", "ok"], rows
    assert {r["containerd"] for r in rows} == {host_version("containerd")}  # read from the daemon that ran
    # a containerd that exits at once is a measurement: filed per setting, no version invented
    for prog in ("ctr", "runc", "crun"):
        (tmp_path / prog).symlink_to(shutil.which(prog))
    (tmp_path / "containerd").symlink_to("/bin/false")
    monkeypatch.setenv("K3SNB_RUNTIME_PATH", str(tmp_path))
    rows = ex.containerd_config_probe(["host"])
    assert [r["cri_plugin"] for r in rows] == ["containerd failed"] * 2, rows
    assert all("containerd exited" in r["error"] and r["containerd"] is None for r in rows)
    monkeypatch.delenv("K3SNB_RUNTIME_PATH")

    # a bug in the probe is not a measurement of containerd: it raises instead of becoming a row
    def broken(self):
        raise TypeError("a programming error")

    monkeypatch.setattr(Containerd, "plugins", broken)
    with pytest.raises(TypeError, match="a programming error"):
        ex.containerd_config_probe(["host"])


def _cli(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "k3snb", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def cli_env(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    return {**os.environ, "K3SNB_STATE": str(state), "K3SNB_TMP": str(tmp_path)}, state


def _wait_running(state: Path, timeout: float = 60) -> str:
    """The containerd id of a CLI run, once its container (sleep) is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in state.glob("runtime-*.json"):
            tag = json.loads(rec.read_text())["id"]
            if any("sleep 300" in x for x in leftovers(tag)):
                return tag
        time.sleep(0.3)
    raise AssertionError("the container never ran")


@pytest.mark.root
def test_cli_ctrl_c_leaves_nothing(cli_env):
    env, state = cli_env
    p = _cli(["runtime", "run", "busybox", "--", "sleep", "300"], env)
    tag = _wait_running(state)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=90)
    assert p.returncode == 130, err
    assert not leftovers(tag) and not list(state.glob("*.json"))


@pytest.mark.root
def test_cli_kill9_then_doctor_clean_leaves_nothing(cli_env):
    env, state = cli_env
    p = _cli(["runtime", "run", "busybox", "--", "sleep", "300"], env)
    tag = _wait_running(state)
    p.kill()
    p.wait(10)
    assert leftovers(tag)  # killed: containerd, shim and container are still there
    r = subprocess.run([sys.executable, "-m", "k3snb", "doctor", "--clean"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not leftovers(tag) and not list(state.glob("*.json"))


@pytest.mark.root
def test_cli_runs_and_reports(cli_env):
    env, _ = cli_env
    r = subprocess.run([sys.executable, "-m", "k3snb", "runtime", "run", "--via", "direct", "busybox", "--",
                        "sh", "-c", "echo out; echo err >&2; exit 5"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (5, "out\n", "err\n")
    r = subprocess.run([sys.executable, "-m", "k3snb", "runtime", "run", "--json", "busybox", "--", "nope"],
                       env=env, capture_output=True, text=True, timeout=120)
    rec = json.loads(r.stdout)
    assert r.returncode == 1 and rec["failed_stage"] == "process_execd"
    assert "error: process_execd failed:" in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["--runtime", "youki", "busybox"], "unknown runtime"),
    (["--snapshotter", "zfs", "busybox"], "unknown snapshotter"),
    (["--via", "docker", "busybox"], "unknown --via"),
    (["/nonexistent/image.tar"], "not found"),
    (["BAD"], "not a valid OCI image archive"),
    (["--runtime", "crun", "busybox"], "crun not found"),
])
def test_cli_bad_input_exit_2(cli_env, tmp_path, args, needle):
    env, state = cli_env
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"\0" * 1024 + b"junk")
    args = [str(bad) if a == "BAD" else a for a in args]
    if "crun" in args:
        env = {**env, "K3SNB_RUNTIME_PATH": str(tmp_path)}  # a search path without crun
    r = subprocess.run([sys.executable, "-m", "k3snb", "runtime", "run", *args, "--", "true"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and needle in r.stderr and "fix:" in r.stderr, r.stderr
    assert r.stderr.count("error:") == 1 and not list(state.glob("*.json"))


def test_missing_runtime_is_usage_error(monkeypatch, tmp_path):
    monkeypatch.setenv("K3SNB_RUNTIME_PATH", str(tmp_path))
    from k3snb.runtime import runtime_binary

    with pytest.raises(MissingDependency) as e:
        runtime_binary("runc")
    assert isinstance(e.value, UsageError) and "runc" in e.value.hint


def _wait_sandbox(state: Path, timeout: float = 90) -> str | None:
    """The gVisor runner id of a CLI run once its containerd record exists too (None on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = {f.name.split("-", 1)[0]: json.loads(f.read_text()) for f in state.glob("*.json")}
        if "runtime" in recs and "gvisor" in recs:
            return recs["gvisor"]["id"]
        time.sleep(0.5)
    return None


@pytest.mark.root
@pytest.mark.runsc2024
def test_cli_kill9_in_gvisor_then_doctor_clean_leaves_nothing(cli_env):
    """In a sandbox the containers are the sandbox's own processes: the sandbox (runsc sandbox, gofer and
    their children on the host, tagged with the runner's id) is what must be gone after the reaper."""
    env, state = cli_env
    p = _cli(["runtime", "run", "--runner", "gvisor:2024", "busybox", "--", "sleep", "300"], env)
    sandbox = _wait_sandbox(state)
    assert sandbox, "containerd never started in the sandbox"
    time.sleep(3)  # ctr run is under way
    assert leftovers(sandbox)  # runsc's host processes carry the sandbox id
    p.kill()
    p.wait(10)
    r = subprocess.run([sys.executable, "-m", "k3snb", "doctor", "--clean"], env=env, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not leftovers(sandbox) and not list(state.glob("*.json"))


@pytest.mark.root
@pytest.mark.runsc2024
def test_cli_ctrl_c_in_gvisor_leaves_nothing(cli_env):
    env, state = cli_env
    p = _cli(["runtime", "run", "--runner", "gvisor:2024", "busybox", "--", "sleep", "300"], env)
    sandbox = _wait_sandbox(state)
    assert sandbox, "containerd never started in the sandbox"
    time.sleep(3)
    assert leftovers(sandbox)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert not leftovers(sandbox) and not list(state.glob("*.json"))
