"""A container that outlives its time limit, and one whose command reads stdin, against the real runc,
crun and containerd (host, gVisor 2024): a timeout is its own outcome (the stage the container was in,
"timed out after N s", nothing left behind), and a process reading stdin sees EOF through containerd as
it does under ``runc run`` (busybox's default command is ``sh``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_runtime_run import leftovers

from k3snb.runtime import Attempt, run_container
from k3snb.runtime.stages import STAGES, attribute

# a duration no other test uses: the container's process is looked up by it
SLEEP = ["sleep", "2947"]
RUNNING = "timed out after 2 s: the process was still running"


def sleepers() -> list[str]:
    """This machine's processes running SLEEP (the container's, on the host)."""
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{d}/cmdline").read_bytes() == b"\0".join(s.encode() for s in SLEEP) + b"\0":
                out.append(d)
        except OSError:
            pass
    return out


def _check_timed_out(rec: dict) -> None:
    """The record of a `sleep` killed by the time limit: it ran, it was running, nothing guessed."""
    st = {s["stage"]: s["status"] for s in rec["stages"]}
    assert rec["timed_out"] and not rec["ok"] and rec["returncode"] is None
    assert (rec["failed_stage"], rec["error"]) == ("exit_status", RUNNING), rec
    assert [st[s] for s in STAGES[:STAGES.index("process_execd") + 1]] == ["ok"] * (STAGES.index("process_execd") + 1)
    assert (st["output_seen"], st["exit_status"]) == ("n/a", "timed out")
    assert rec["signature"] is None and rec["signatures"] == []  # no blocker read into unrelated log words
    assert not leftovers(rec["info"]["id"]) and not sleepers()


# -- stage model -------------------------------------------------------------------------------------
def test_log_fields_pick_no_stage_and_a_failure_always_says_something():
    # containerd's log context of a run: `namespace=k8s.io` is a field, not a namespace failure
    ctx = ('time="2026-11-30T11:45:00.123456789Z" level=info msg="starting signal loop" namespace=k8s.io '
           'path=/run/k3snb-ctd-x/containerd.sock.ttrpc pid=42 runtime=io.containerd.runc.v2')
    assert attribute(ctx, "container_created") == "container_created"
    assert attribute("unshare: the namespace of the child", "container_created") == "runtime_init"
    err = 'time="2026-11-30T11:45:01Z" level=error msg="copy shim log" error="nsexec: failed to setns" namespace=k8s.io'
    assert attribute(err, "container_created") == "runtime_init"  # what the line says still counts
    a = Attempt("host", "runc", "containerd", "busybox", [])
    a.fail("container_created", "", context=ctx)
    assert a.failed_stage == "container_created" and a.error == "container_created step failed without an error message"
    b = Attempt("host", "runc", "containerd", "busybox", [])
    b.fail("container_created", "", context=f"{ctx}\n{err}")
    assert b.failed_stage == "runtime_init" and "nsexec: failed to setns" in b.error


# -- host ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host():
    from k3snb.runners.host import Host

    with Host() as h:
        yield h


@pytest.mark.root
def test_timeout_via_containerd_is_reported_by_the_cli_with_its_stage(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    env = {**os.environ, "K3SNB_STATE": str(state), "K3SNB_TMP": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "k3snb", "runtime", "run", "--json", "--timeout", "2", "busybox",
                        "--", *SLEEP], env=env, capture_output=True, text=True, timeout=120)
    rec = json.loads(r.stdout)
    assert r.returncode == 1 and rec["via"] == "containerd"
    _check_timed_out(rec)
    assert f"error: exit_status {RUNNING}\n" in r.stderr and "\n  fix: pass a larger --timeout (was 2 s)" in r.stderr
    assert "runtime_init" not in r.stderr and not list(state.glob("*.json"))


@pytest.mark.root
def test_timeout_direct_reports_the_furthest_stage_reached(host):
    a = run_container(host, "busybox", SLEEP, runtime="crun", via="direct", timeout=2)
    _check_timed_out(a.to_dict())
    assert "still running" in a._repr_text()


@pytest.mark.root
@pytest.mark.parametrize("via", ["containerd", "direct"])
def test_default_shell_reads_eof_and_ends(host, via):
    # no command: busybox's own `sh`, which reads commands from stdin until EOF
    a = run_container(host, "busybox", [], via=via, timeout=30)
    assert a.ok and a.returncode == 0 and not a.timed_out, (a.failed_stage, a.error)
    assert not leftovers(a.info["id"])


# -- gVisor 2024 -------------------------------------------------------------------------------------
@pytest.mark.root
@pytest.mark.runsc2024
def test_in_gvisor_2024_timeouts_and_the_default_shell():
    from k3snb.runners.gvisor import GVisor

    with GVisor("2024") as g:
        for via in ("containerd", "direct"):
            a = run_container(g, "busybox", SLEEP, via=via, timeout=2)
            _check_timed_out(a.to_dict())
            # inside the sandbox too: no process of the container is left
            procs = g.run(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"], timeout=30).stdout
            assert " ".join(SLEEP) not in procs
        a = run_container(g, "busybox", [], via="containerd", timeout=30)
        assert a.ok and a.returncode == 0, (a.failed_stage, a.error)
        assert not leftovers(a.info["id"])
