"""The ``host-local`` alias as the IPAM delegate of a real CNI main plugin (Debian's ``bridge``).

``bridge`` execs ``host-local`` from CNI_PATH (our alias) for the address, then really creates the
bridge, a veth pair and configures the address inside a network namespace — so the address the
alias allocated is seen on an interface in the namespace, and DEL releases it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from k3snb.cni import call_plugin, install_cni

BRIDGE = Path("/usr/lib/cni/bridge")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not BRIDGE.exists(), reason="needs containernetworking-plugins (/usr/lib/cni/bridge)"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]


def _ip(*args: str, check: bool = True) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30).stdout


@pytest.fixture
def netns():
    name = f"k3snb-t{uuid.uuid4().hex[:8]}"
    bridge = f"k3snbbr{uuid.uuid4().hex[:4]}"
    _ip("netns", "add", name)
    try:
        yield f"/run/netns/{name}", bridge
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            _ip("netns", "delete", name, check=False)
            _ip("link", "delete", bridge, check=False)


def test_bridge_uses_alias_for_ipam(tmp_path, netns):
    path, bridge = netns
    inst = install_cni(tmp_path / "bin", tmp_path / "conf", aliases=("host-local",))
    conf = {"cniVersion": "1.0.0", "name": "delegate", "type": "bridge", "bridge": bridge,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.211.0.0/24"}]],
                     "dataDir": str(inst.data_dir)}}
    r = call_plugin(BRIDGE, "ADD", conf, "ctr1", path, "eth0", cni_path=str(inst.bin_dir))
    assert r.ok, r.reply
    assert r.addresses == ["10.211.0.2/24"]
    shown = json.loads(_ip("-n", path.rsplit("/", 1)[1], "-j", "addr", "show", "eth0"))
    assert "10.211.0.2" in [a["local"] for a in shown[0]["addr_info"]]
    assert inst.allocations("delegate")["ctr1/eth0"]["ips"][0]["address"] == "10.211.0.2/24"
    assert [c["command"] for c in inst.calls()] == ["ADD"]

    d = call_plugin(BRIDGE, "DEL", conf, "ctr1", path, "eth0", cni_path=str(inst.bin_dir))
    assert d.ok, d.reply
    assert inst.allocations("delegate") == {}
