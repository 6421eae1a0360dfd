"""runc on a busybox bundle and containerd with a minimal config, inside real runners."""

from __future__ import annotations

import json

import pytest

from k3snb.runtime import Containerd, containerd_config, run_bundle, write_bundle
from k3snb.workarounds import get_workaround


def test_bundle_is_minimal(tmp_path):
    b = write_bundle(tmp_path / "b", ["echo", "hi"])
    cfg = json.loads((b / "config.json").read_text())
    assert [n["type"] for n in cfg["linux"]["namespaces"]] == ["pid", "ipc", "uts", "mount"]  # W35: no cgroup ns
    assert cfg["process"]["capabilities"]["effective"] == []
    assert (b / "rootfs" / "bin" / "busybox").is_file()
    assert "NoNewKeyring = true" in containerd_config("/x") and 'snapshotter = "native"' in containerd_config("/x")


@pytest.fixture(scope="module")
def host():
    from k3snb.runners.host import Host

    with Host() as h:
        yield h


@pytest.fixture(scope="module")
def gvisor():
    from k3snb.runners.gvisor import GVisor

    with GVisor("2022") as g:
        yield g


@pytest.mark.root
def test_runc_runs_busybox_in_host(host):
    res = run_bundle(host, ("echo", "hello-from-runc"))
    assert res.ok and res.stdout.strip() == "hello-from-runc"
    assert not list(host.workdir.glob("k3snb-runc-*"))  # bundle removed


@pytest.mark.root
@pytest.mark.runsc
def test_runc_fails_at_cgroups_in_gvisor_2022(gvisor):
    # gvisor-matrix §1: no cgroup mount → runc stops before runc init; with the v1 layout it
    # stops at the missing devices controller instead.
    res = run_bundle(gvisor)
    assert not res.ok and "no cgroup mount found in mountinfo" in res.stderr
    w = get_workaround("cgroup-v1")
    w.apply(gvisor)
    try:
        res2 = run_bundle(gvisor)
    finally:
        w.revert(gvisor)
    assert not res2.ok and "devices" in res2.stderr


@pytest.mark.root
@pytest.mark.parametrize("kind", ["host", pytest.param("gvisor", marks=pytest.mark.runsc)])
def test_containerd_starts_with_cri_and_native_snapshotter(kind, request):
    runner = request.getfixturevalue(kind)
    with Containerd(runner) as c:
        assert c.alive() and c.startup_s is not None
        df = c.plugins().set_index("id")
        assert df.loc["cri", "status"] == "ok"
        assert df.loc["native", "status"] == "ok"
        assert c.ctr("version").ok
        base = c.base
    assert not c.alive()
    assert not runner.run(["test", "-e", base]).ok  # state dir removed inside the runner
