"""Real k3s launches (skipped without a k3s binary: set K3SNB_K3S, put k3s on PATH, or install it).

Each test checks what happened and that ``stop()`` left nothing: no k3s/containerd processes, no
state record, the host's mount table unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import procs_with

import k3snb
from k3snb._state import records

pytestmark = [pytest.mark.k3s, pytest.mark.root]


def _host_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(" ".join(line.split()[4:6]) for line in f)


def _assert_clean(cluster, mounts_before):
    assert not cluster.alive()
    assert not [r for r in records() if r.kind == "k3s" and r.id == cluster.id]
    assert not procs_with(cluster.id)
    assert _host_mounts() == mounts_before


def test_control_plane_in_host_reaches_readyz():
    before = _host_mounts()
    with k3snb.launch_k3s("control-plane", runner="host", timeout=240) as c:
        r = c.readiness
        assert r.ok, (r.to_frame(), c.logs(40))
        assert r.stages["kubeconfig"].seconds <= r.stages["readyz"].seconds
        assert c.version.version.startswith("v1.")
        assert "Starting k3s" in c.logs(tail=None)
        info = c.info()
        assert info["k3s"]["version"] == c.version.version and "--disable-agent" in " ".join(info["command"])
        m = c.monitor(interval=0.5)
        objs = c.objects()
        assert "kube-system" in objs["namespaces"]
        m.stop()
        assert m.summary()["peak_rss_mb"] > 50
        assert c.classify().to_frame() is not None
        rep = c.stop()
    assert rep["ok"], rep
    _assert_clean(c, before)


@pytest.mark.runsc
@pytest.mark.slow
def test_control_plane_in_gvisor_starts_and_stops_clean():
    before = _host_mounts()
    c = k3snb.launch_k3s("control-plane", runner="gvisor", timeout=240)
    try:
        assert "Starting k3s" in c.logs(tail=None), c.logs(40)
        assert c.readiness.stages["process"].reached
    finally:
        rep = c.stop()
    assert rep["ok"], rep
    _assert_clean(c, before)


def test_cli_start_status_logs_stop(tmp_path):
    env = dict(os.environ, K3SNB_STATE=str(tmp_path / "state"))

    def cli(*args, timeout=400):
        return subprocess.run([sys.executable, "-m", "k3snb.k3s._cli", *args], capture_output=True, text=True,
                              env=env, timeout=timeout)

    start = cli("start", "--profile", "control-plane", "--runner", "host", "--timeout", "240")
    try:
        assert start.returncode == 0, start.stderr
        st = cli("status")
        assert "profile=control-plane" in st.stdout and "alive=True" in st.stdout
        lg = cli("logs", "--tail", "200")
        assert "Starting k3s" in lg.stdout
    finally:
        stop = cli("stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert "no k3s clusters running" in cli("status").stdout
    assert not list((tmp_path / "state").glob("*.json"))


@pytest.mark.runsc
@pytest.mark.slow
def test_worker_stable_in_gvisor_reports_the_stage_reached():
    before = _host_mounts()
    c = k3snb.launch_k3s("worker-stable", runner="gvisor", runner_options={"net_raw": True}, timeout=240)
    try:
        assert c.readiness.stages["process"].reached
        cls = c.classify()
        assert cls.furthest_stage is not None, c.logs(40)
        wrapped = c.command[:4]
        assert wrapped[1:4] == ["-m", "k3snb.tracing", "intercept"]  # the interceptor wraps k3s
    finally:
        rep = c.stop()
    assert rep["ok"], rep
    _assert_clean(c, before)
