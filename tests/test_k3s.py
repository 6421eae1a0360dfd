"""k3s binary discovery, version parsing, install errors, profile/flag validation, and the
missing-binary paths of ``launch_k3s`` and ``k3snb k3s start`` (nothing may be left behind).

The executables created here are small shell scripts that print a version string: they are NOT
k3s and are used only to test discovery order and version parsing (never launched as k3s).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import procs_with

import k3snb
from k3snb.errors import InvalidParameter, K3sBinaryMissing, K3sError, UsageError
from k3snb.k3s import (
    find_k3s,
    get_profile,
    install_k3s,
    launch_k3s,
    list_profiles,
    parse_version,
    validate_flags,
)
from k3snb.k3s.binary import k3s_version


def _fake_version_exe(path: Path, version: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "k3s version {version} (abcdef12)"\necho "go version go1.22.9"\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Empty kit cache/state/tmp and a PATH without any k3s."""
    for var in ("K3SNB_CACHE", "K3SNB_STATE", "K3SNB_TMP"):
        d = tmp_path / var.lower()
        d.mkdir()
        monkeypatch.setenv(var, str(d))
    monkeypatch.delenv("K3SNB_K3S", raising=False)
    clean = [p for p in os.environ.get("PATH", "").split(":") if p and not (Path(p) / "k3s").exists()]
    monkeypatch.setenv("PATH", ":".join(clean))
    return tmp_path


def test_discovery_order_env_then_path_then_cache(isolated, monkeypatch):
    cache = Path(os.environ["K3SNB_CACHE"])
    _fake_version_exe(cache / "k3s" / "v1.28.5+k3s1" / "k3s", "v1.28.5+k3s1")
    _fake_version_exe(cache / "k3s" / "v1.31.3+k3s1" / "k3s", "v1.31.3+k3s1")
    b = find_k3s()
    assert (b.source, b.version.version) == ("cache", "v1.31.3+k3s1")  # newest cached version
    assert find_k3s("v1.28.5+k3s1").version.version == "v1.28.5+k3s1"

    on_path = _fake_version_exe(isolated / "pathbin" / "k3s", "v1.33.5+k3s1")
    monkeypatch.setenv("PATH", f"{on_path.parent}:{os.environ['PATH']}")
    b = find_k3s()
    assert (b.source, b.path, b.version.version) == ("path", on_path, "v1.33.5+k3s1")

    env = _fake_version_exe(isolated / "envbin" / "my-k3s", "v1.34.1+k3s1")
    monkeypatch.setenv("K3SNB_K3S", str(env))
    b = find_k3s()
    assert (b.source, b.path, b.version.version) == ("env", env, "v1.34.1+k3s1")
    assert b.version.commit == "abcdef12" and b.version.go == "go1.22.9" and b.version.kubernetes == "v1.34.1"


def test_env_var_pointing_at_nothing_is_an_error(isolated, monkeypatch):
    monkeypatch.setenv("K3SNB_K3S", str(isolated / "missing"))
    with pytest.raises(K3sBinaryMissing, match="K3SNB_K3S"):
        find_k3s()


def test_missing_binary_names_the_three_ways(isolated):
    with pytest.raises(K3sBinaryMissing) as e:
        find_k3s()
    text = str(e.value)
    assert "K3SNB_K3S" in text and "PATH" in text and "install" in text
    assert e.value.exit_code == 2
    assert k3snb.find_k3s is find_k3s


def test_parse_version_variants():
    v = parse_version("k3s version v1.33.5+k3s1 (8a8e43b3)\ngo version go1.24.6\n")
    assert (v.version, v.commit, v.go, v.kubernetes) == ("v1.33.5+k3s1", "8a8e43b3", "go1.24.6", "v1.33.5")
    assert parse_version("k3s version v1.28.5+k3s1").commit is None
    with pytest.raises(K3sError, match="cannot parse"):
        parse_version("Usage: something else")


def test_version_of_a_non_k3s_program_is_a_clear_error(tmp_path):
    exe = tmp_path / "notk3s"
    exe.write_text("#!/bin/sh\necho hello\n")
    exe.chmod(0o755)
    with pytest.raises(K3sError, match="cannot parse"):
        k3s_version(exe)


def test_install_validates_version_and_reports_offline(isolated):
    with pytest.raises(InvalidParameter, match="not a k3s version"):
        install_k3s("latest")
    with pytest.raises(InvalidParameter, match="arch"):
        install_k3s("v1.33.5+k3s1", arch="sparc")
    # this machine has no route to the release host: a clear K3sError, nothing left in the cache
    with pytest.raises(K3sError) as e:
        install_k3s("v1.33.5+k3s1", timeout=10)
    assert "download" in str(e.value) and "K3SNB_K3S" in e.value.hint
    assert not list(Path(os.environ["K3SNB_CACHE"]).rglob("k3s*"))


# -- profiles and flags --------------------------------------------------------------------------
def test_profiles_table_and_required_profiles():
    t = list_profiles()
    names = set(t)
    assert {"control-plane", "worker-ultimate", "worker-stable", "rootless-like"} <= names
    df = t.to_frame()
    assert {"name", "workarounds", "flags", "target_stage"} <= set(df.columns)
    for name in names:
        p = get_profile(name)
        validate_flags(p.all_flags())  # every flag a profile contributes is spelled right
        p.to_frame()  # every workaround id resolves
    cp = get_profile("control-plane")
    assert "--disable-agent" in cp.all_flags() and not cp.agent
    ult = get_profile("worker-ultimate")
    assert "fake-procsys" in ult.workarounds and "--kubelet-arg=--local-storage-capacity-isolation=false" in ult.all_flags()
    assert "--flannel-backend=none" in get_profile("worker-stable").all_flags()
    assert "kubelet-in-userns" in get_profile("rootless-like").workarounds


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(UsageError) as e:
        get_profile("control-plan")
    assert "control-plane" in str(e.value) and "worker-stable" in str(e.value)
    assert "did you mean 'control-plane'" in e.value.hint


@pytest.mark.parametrize("flags, match", [
    ("--disable-agent", "list of flags"),
    (["disable-agent"], "not a k3s flag"),
    (["--snapshoter=native"], "did you mean --snapshotter"),
    (["--kubelet-arg"], "needs a value"),
    (["--data-dir=/x"], "set by the launcher"),
])
def test_flag_validation(flags, match):
    with pytest.raises(InvalidParameter, match=match):
        validate_flags(flags)


def test_valid_flags_pass():
    ok = ["--disable-agent", "--kubelet-arg=--fail-swap-on=false", "--etcd-expose-metrics", "--flannel-backend=none"]
    assert validate_flags(ok) == ok
    assert validate_flags(["--brand-new-flag"], strict=False) == ["--brand-new-flag"]


# -- nothing starts on bad input or without k3s ---------------------------------------------------
def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("kwargs, exc", [
    ({"profile": "nope"}, UsageError),
    ({"profile": "control-plane", "extra_flags": ["--bogus"]}, InvalidParameter),
    ({"profile": "control-plane", "skip": ["not-a-workaround"]}, UsageError),
    ({"profile": "control-plane", "params": {"kmsg": {"bad": 1}}}, InvalidParameter),
    ({"profile": "control-plane", "wait": "node-ready"}, InvalidParameter),
    ({"profile": "control-plane", "wait": "soon"}, InvalidParameter),
    ({"profile": "control-plane"}, K3sBinaryMissing),
])
def test_launch_validates_before_starting_anything(isolated, kwargs, exc):
    before = _snapshot(isolated)
    with pytest.raises(exc):
        launch_k3s(runner="host", **kwargs)
    assert _snapshot(isolated) == before


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "k3snb.k3s._cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_start_without_k3s_fails_and_leaves_nothing(isolated):
    env = dict(os.environ)
    before = _snapshot(isolated)
    res = _cli(["start", "--profile", "control-plane", "--runner", "host"], env)
    assert res.returncode != 0
    assert "no k3s binary found" in res.stderr and "K3SNB_K3S" in res.stderr and "install" in res.stderr
    assert _snapshot(isolated) == before  # no state record, no temp dir, no cache entry
    assert not procs_with(str(isolated))  # no daemon (its argv would name a file in K3SNB_TMP)
    st = _cli(["status"], env)
    assert st.returncode == 0 and "no k3s clusters running" in st.stdout
    # the installed console script too, when the lead's CLI has wired the subcommand in
    cli = Path(sys.executable).with_name("k3snb")
    if cli.exists():
        r2 = subprocess.run([str(cli), "k3s", "start"], capture_output=True, text=True, env=env, timeout=120)
        if "invalid choice: 'k3s'" not in r2.stderr:
            assert r2.returncode != 0 and "K3SNB_K3S" in r2.stderr
            assert _snapshot(isolated) == before


def test_cli_bad_profile_exits_2(isolated):
    res = _cli(["start", "--profile", "nope"], dict(os.environ))
    assert res.returncode == 2 and "valid: " in res.stderr


def test_host_runner_refuses_an_agent_without_host_true(isolated, monkeypatch):
    exe = _fake_version_exe(isolated / "bin" / "k3s", "v1.33.5+k3s1")  # only to pass discovery
    monkeypatch.setenv("K3SNB_K3S", str(exe))
    before = _snapshot(isolated)
    with pytest.raises(UsageError, match="network namespace") as e:
        launch_k3s("worker-stable", runner="host")
    assert "host=True" in e.value.hint
    assert _snapshot(isolated) == before


# -- notebook helpers (what the k3s notebooks compute) ---------------------------------------------
def test_notebook_helpers_without_k3s(isolated):
    from k3snb.k3s import notebook as nbk

    st = nbk.k3s_status()
    assert st["available"] is False and "K3SNB_K3S" in st["reason"]
    from k3snb.studies import k3s as k3s_studies

    v = k3s_studies.api_ready("Exp 05", st, None, what="control plane")
    assert v.status == "not-testable" and "K3SNB_K3S" in v.reason  # the verdicts name the fix
    # the research's own quoted lines carry the signatures each experiment is about
    expect = {"01": "S11", "02": "S03", "05": "S10", "12": "S03", "13": "S18", "15": "S19", "16": "S20"}
    for exp, sig in expect.items():
        assert sig in nbk.classify_quotes(exp).ids, exp
    assert list(nbk.manifest_summary()["kind"]) == ["ConfigMap", "Deployment", "Service"]


@pytest.mark.root
@pytest.mark.runsc
def test_failed_workaround_during_launch_undoes_everything(isolated, monkeypatch):
    """fake-diskstats cannot work in gVisor: the launch must fail before k3s is spawned and undo
    the scratch mounts, the workarounds applied so far, the state record and the sandbox. The
    version-printing script only passes discovery; it is never executed as k3s."""
    from k3snb.errors import WorkaroundFailed

    exe = _fake_version_exe(isolated / "bin" / "k3s", "v1.33.5+k3s1")
    with open("/proc/self/mountinfo") as f:
        mounts_before = sorted(" ".join(line.split()[4:6]) for line in f)
    before = _snapshot(isolated)
    with pytest.raises(WorkaroundFailed, match="diskstats"):
        launch_k3s("control-plane", runner="gvisor", add=["kmsg", "fake-diskstats"], binary=str(exe), wait=False)
    with open("/proc/self/mountinfo") as f:
        assert sorted(" ".join(line.split()[4:6]) for line in f) == mounts_before
    assert _snapshot(isolated) == before  # no record, no sandbox dir left in K3SNB_TMP/K3SNB_STATE


@pytest.mark.root
@pytest.mark.parametrize("kind", ["host", pytest.param("gvisor", marks=pytest.mark.runsc)])
def test_scratch_mounts_for_k3s_paths_leave_the_host_untouched(kind):
    """The paths k3s writes outside its data dir get a tmpfs inside the runner (an overlay where the
    parent is read-only, as /etc on gVisor's 9p root); reverting leaves the host as it was."""
    from k3snb.k3s import _inrunner as ir
    from k3snb.k3s.notebook import make_runner

    paths = list(ir.AGENT_SCRATCH)
    existed = {p: os.path.exists(p) for p in paths}
    with make_runner(kind, "2022" if kind == "gvisor" else None) as r:
        st = r.run_python(ir.scratch_apply, paths, "/tmp/k3snb-scratch-stage")
        assert st["ok"], st["errors"]
        assert r.run(["/bin/sh", "-c", "echo x > /etc/rancher/probe && echo y > /var/lib/kubelet/probe"]).ok
        if kind == "gvisor":
            assert any(e.get("overlay") == "/etc" for e in st["entries"])  # /etc is read-only 9p there
        assert r.run_python(ir.scratch_revert, st)["ok"]
        assert not r.run(["test", "-e", "/etc/rancher/probe"]).ok
    assert {p: os.path.exists(p) for p in paths} == existed
    assert not os.path.exists("/etc/rancher/probe")
