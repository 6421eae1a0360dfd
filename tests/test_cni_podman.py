"""The fake CNI plugin behind a real CNI consumer: podman's CNI network backend (Debian podman 4.3).

A network whose conflist references the kit's plugin; containers started on it get their address
from the plugin (seen in ``podman inspect`` and the container's /etc/hosts), and removing them
makes podman call DEL, which releases the address in the plugin's state file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from k3snb._state import tracked_tempdir
from k3snb.cni import install_cni

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman: apt-get install podman"),
    pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="needs busybox-static"),
]

NET = "k3snbtest"


def _podman_env(d: Path, inst) -> dict[str, str]:
    (d / "containers.conf").write_text(
        f"""[containers]
# the VM's hard limits are below podman's defaults (runc: "error setting rlimit type 7")
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{inst.bin_dir}"]
network_config_dir = "{inst.conf_dir}"
[engine]
# with crun installed podman picks it, and crun 1.8 refuses this host's hybrid cgroups
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
tmp_dir = "{d}/tmp"
"""
    )
    (d / "storage.conf").write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{d}/graph"\nrunroot = "{d}/run"\n')
    return {**os.environ, "CONTAINERS_CONF": str(d / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(d / "storage.conf")}


@pytest.fixture
def podman(tmp_path):
    with tracked_tempdir("cni-podman") as d:
        inst = install_cni(d / "bin", d / "net.d", network=NET, subnet="10.89.0.0/24")
        env = _podman_env(d, inst)

        def run(*args: str, check: bool = True) -> str:
            p = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=120)
            if check and p.returncode:
                raise AssertionError(f"podman {' '.join(args)} failed: {p.stderr}")
            return p.stdout.strip()

        try:  # containers go before the temp dir (tracked_tempdir removes it on any exit)
            info = json.loads(run("info", "--format", "json"))
            if info["host"].get("networkBackend") != "cni":
                pytest.skip(f"podman network backend is {info['host'].get('networkBackend')!r}, not cni")
            rootfs = d / "rootfs"
            (rootfs / "bin").mkdir(parents=True)
            shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
            for applet in ("sh", "sleep", "cat"):
                (rootfs / "bin" / applet).symlink_to("busybox")
            subprocess.run(["tar", "-C", str(rootfs), "-cf", str(d / "bb.tar"), "."], check=True)
            run("import", str(d / "bb.tar"), "localhost/k3snb-busybox:test")
            yield run, inst
        finally:
            run("rm", "-af", "-t", "0", check=False)
            run("rmi", "-af", check=False)


def test_podman_containers_get_addresses_from_the_plugin(podman):
    run, inst = podman
    assert NET in run("network", "ls", "--format", "{{.Name}}").split()
    ids = [run("run", "-d", "--name", f"c{n}", "--network", NET, "localhost/k3snb-busybox:test", "sleep", "600")
           for n in (1, 2)]
    alloc = inst.allocations()
    seen = []
    for cid in ids:
        net = json.loads(run("inspect", cid, "--format", "{{json .NetworkSettings.Networks}}"))[NET]
        stored = alloc[f"{cid}/eth0"]["ips"][0]
        assert f"{net['IPAddress']}/{net['IPPrefixLen']}" == stored["address"]
        assert net["Gateway"] == stored["gateway"] == "10.89.0.1"
        assert alloc[f"{cid}/eth0"]["netns"].startswith("/run/netns/")
        assert net["IPAddress"] in run("exec", cid, "cat", "/etc/hosts")
        seen.append(net["IPAddress"])
    assert len(set(seen)) == 2
    adds = [c for c in inst.calls() if c["command"] == "ADD" and c["code"] == 0]
    assert {c["container_id"] for c in adds} == set(ids)

    run("rm", "-f", "-t", "0", ids[0])
    assert f"{ids[0]}/eth0" not in inst.allocations()
    assert f"{ids[1]}/eth0" in inst.allocations()
    assert any(c["command"] == "DEL" and c["container_id"] == ids[0] for c in inst.calls())
