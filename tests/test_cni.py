"""The fake CNI plugin driven by the CNI protocol (env vars + stdin) as a runtime does."""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import k3snb
from k3snb.cni import call_plugin, install_cni
from k3snb.cni._cli import register
from k3snb.errors import InvalidParameter, UsageError

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


@pytest.fixture
def inst(tmp_path: Path):
    i = install_cni(tmp_path / "bin", tmp_path / "conf", aliases=("host-local",), subnet="10.99.0.0/24")
    yield i
    i.uninstall()


def plugin_conf(inst, version="1.0.0", **over) -> dict:
    """What a runtime feeds the first plugin of the conflist: the entry plus name and cniVersion."""
    conflist = json.loads(inst.conflist.read_text())
    conf = dict(conflist["plugins"][0], name=conflist["name"], cniVersion=version)
    conf.update(over)
    return conf


def add(inst, cid, version="1.0.0", ifname="eth0", conf=None):
    return call_plugin(inst.programs[0], "ADD", conf or plugin_conf(inst, version), cid, "/run/netns/t", ifname)


def test_version_lists_supported_versions(inst):
    r = call_plugin(inst.programs[0], "VERSION", b"")
    assert r.ok and r.reply["supportedVersions"] == VERSIONS
    r = call_plugin(inst.programs[0], "VERSION", {"cniVersion": "0.4.0"})
    assert r.reply["cniVersion"] == "0.4.0"


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_shape_per_version(inst, version):
    r = add(inst, f"c-{version}", version)
    assert r.ok, r.reply
    res = r.reply
    assert res["cniVersion"] == version
    (iface,) = res["interfaces"]
    assert iface["name"] == "eth0" and iface["sandbox"] == "/run/netns/t" and len(iface["mac"].split(":")) == 6
    (ip,) = res["ips"]
    assert ipaddress.ip_interface(ip["address"]).network == ipaddress.ip_network("10.99.0.0/24")
    assert ip["interface"] == 0 and ip["gateway"] == "10.99.0.1"
    # 1.0.0 dropped the per-IP "version" field
    assert ("version" in ip) == (version < "1.0.0")
    assert res["routes"] == [{"dst": "0.0.0.0/0"}]


def test_addresses_stable_per_container_and_ifname(inst):
    a1 = add(inst, "alpha").addresses
    assert add(inst, "alpha").addresses == a1
    b = add(inst, "beta").addresses
    a_net1 = add(inst, "alpha", ifname="net1").addresses
    assert len({a1[0], b[0], a_net1[0]}) == 3
    assert inst.allocations()["alpha/eth0"]["ips"][0]["address"] == a1[0]


def test_range_keys_respected_and_exhaustion_is_try_again(tmp_path):
    i = install_cni(tmp_path / "b", tmp_path / "c", subnet="10.7.0.0/29")
    conf = plugin_conf(i)
    conf["ipam"]["ranges"] = [[{"subnet": "10.7.0.0/29", "rangeStart": "10.7.0.3", "rangeEnd": "10.7.0.5"}]]
    got = [add(i, f"c{n}", conf=conf) for n in range(4)]
    assert [r.addresses[0] for r in got[:3]] == ["10.7.0.3/29", "10.7.0.4/29", "10.7.0.5/29"]
    assert got[3].returncode != 0 and got[3].reply["code"] == 11
    # the simple form: a plain "subnet" key in the plugin entry
    simple = {"cniVersion": "1.0.0", "name": "simple", "type": "k3snb", "subnet": "192.168.50.0/30",
              "dataDir": str(tmp_path / "state")}
    r = add(i, "s1", conf=simple)
    assert r.addresses == ["192.168.50.2/30"] and r.reply["ips"][0]["gateway"] == "192.168.50.1"


def test_ipv6_range(inst):
    conf = plugin_conf(inst, ipam={"ranges": [[{"subnet": "fd00:88::/120"}]], "dataDir": str(inst.data_dir)})
    conf["name"] = "v6"
    r = add(inst, "six", conf=conf)
    assert r.addresses == ["fd00:88::2/120"]
    r = add(inst, "six-old", "0.4.0", conf=dict(conf, cniVersion="0.4.0"))
    assert r.reply["ips"][0]["version"] == "6"


def test_del_releases_and_is_idempotent(inst):
    first = add(inst, "one").addresses[0]
    add(inst, "two")
    prog = inst.programs[0]
    for _ in range(2):
        r = call_plugin(prog, "DEL", plugin_conf(inst), "one", "", "eth0")
        assert r.ok and r.reply is None
    assert "one/eth0" not in inst.allocations()
    assert call_plugin(prog, "DEL", plugin_conf(inst), "never-added", "", "eth0").ok
    # the released address is handed out again
    assert add(inst, "three").addresses[0] == first
    assert [c["command"] for c in inst.calls()].count("DEL") == 3


def test_check(inst):
    prog = inst.programs[0]
    res = add(inst, "chk").reply
    assert call_plugin(prog, "CHECK", plugin_conf(inst, prevResult=res), "chk", "/run/netns/t").ok
    r = call_plugin(prog, "CHECK", plugin_conf(inst, prevResult=res), "unknown", "/run/netns/t")
    assert r.reply["code"] == 3
    r = call_plugin(prog, "CHECK", plugin_conf(inst), "chk", "/run/netns/t")
    assert r.reply["code"] == 7  # no prevResult
    r = call_plugin(prog, "CHECK", plugin_conf(inst, "0.3.1", prevResult=res), "chk", "/run/netns/t")
    assert r.reply["code"] == 1  # CHECK arrived in 0.4.0


@pytest.mark.parametrize(
    "command,config,env,code",
    [
        ("ADD", b"{not json", {}, 6),
        ("ADD", b"[1, 2]", {}, 6),
        ("ADD", {"cniVersion": "0.2.0", "name": "n", "type": "k3snb", "subnet": "10.1.0.0/16"}, {}, 1),
        ("ADD", {"cniVersion": "9.9.9", "name": "n", "type": "k3snb", "subnet": "10.1.0.0/16"}, {}, 1),
        ("ADD", {"name": "n", "type": "k3snb", "subnet": "10.1.0.0/16"}, {}, 7),
        ("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "k3snb"}, {}, 7),
        ("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "k3snb", "subnet": "10.1.0.0/33"}, {}, 7),
        ("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "k3snb", "subnet": "10.1.0.0/16"},
         {"container_id": ""}, 4),
        ("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "k3snb", "subnet": "10.1.0.0/16"},
         {"ifname": "a/b"}, 4),
        ("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "k3snb", "subnet": "10.1.0.0/16"}, {"netns": ""}, 4),
        ("FROB", {"cniVersion": "1.0.0"}, {}, 4),
        ("STATUS", {"cniVersion": "1.0.0", "name": "n", "type": "k3snb", "subnet": "10.1.0.0/16"}, {}, 1),
        ("GC", {"cniVersion": "0.4.0", "name": "n", "type": "k3snb", "subnet": "10.1.0.0/16"}, {}, 1),
    ],
)
def test_errors_are_spec_json(inst, tmp_path, command, config, env, code):
    if isinstance(config, dict):
        config = dict(config, dataDir=str(tmp_path / "st"))
    kw = {"container_id": "cid", "netns": "/run/netns/x", "ifname": "eth0", **env}
    r = call_plugin(inst.programs[0], command, config, **kw)
    assert r.returncode != 0
    assert r.reply["code"] == code and r.reply["msg"] and "cniVersion" in r.reply


def test_status_and_gc_1_1_0(tmp_path):
    i = install_cni(tmp_path / "b", tmp_path / "c", subnet="10.5.0.0/30", cni_version="1.1.0")
    prog, conf = i.programs[0], plugin_conf(i, "1.1.0")
    st = call_plugin(prog, "STATUS", conf)
    assert st.ok and st.reply is None
    add(i, "keep", "1.1.0")  # a /30 holds exactly one address after the gateway
    st = call_plugin(prog, "STATUS", conf)
    assert st.reply["code"] == 50
    gc_conf = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    assert call_plugin(prog, "GC", gc_conf).ok
    assert list(i.allocations()) == ["keep/eth0"]
    assert call_plugin(prog, "GC", dict(conf, **{"cni.dev/valid-attachments": []})).ok
    assert i.allocations() == {} and call_plugin(prog, "STATUS", conf).ok


def test_alias_answers_as_ipam_delegate(inst):
    host_local = inst.programs[1]
    assert host_local.name == "host-local"
    conf = {"cniVersion": "0.4.0", "name": "cbr0", "type": "bridge",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.42.0.0/24"}]], "dataDir": str(inst.data_dir)}}
    r = call_plugin(host_local, "ADD", conf, "pod1", "/run/netns/p")
    assert r.ok and "interfaces" not in r.reply
    assert r.reply["ips"] == [{"address": "10.42.0.2/24", "version": "4", "gateway": "10.42.0.1"}]


def test_concurrent_adds_get_distinct_addresses(inst):
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda n: add(inst, f"par{n}"), range(24)))
    addrs = [r.addresses[0] for r in results]
    assert all(r.ok for r in results) and len(set(addrs)) == 24
    assert len(inst.allocations()) == 24


def test_plugin_import_stays_light():
    code = "import sys, k3snb.cni.plugin; print(sorted(m for m in ('pandas', 'yaml', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_install_layout_and_refuses_foreign_files(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "host-local").write_text("#!/bin/sh\necho real\n")
    with pytest.raises(UsageError) as e:
        install_cni(bin_dir, tmp_path / "conf", aliases=("host-local",))
    assert "force" in e.value.hint
    i = k3snb.install_cni(bin_dir, tmp_path / "conf", aliases=("host-local",), force=True, network="lab")
    assert i.conflist.name == "10-lab.conflist"
    conflist = json.loads(i.conflist.read_text())
    assert conflist["plugins"][0]["type"] == "k3snb" and conflist["name"] == "lab"
    assert all(p.stat().st_mode & 0o111 for p in i.programs)
    assert i.programs[0].read_text().startswith(f"#!{sys.executable}\n")
    assert "network=lab" in repr(i) and "conflist" in i._repr_html_()
    i.uninstall()
    assert not any(p.exists() for p in [*i.programs, i.conflist])


@pytest.mark.parametrize("kw", [{"subnet": "10.0.0.0/99"}, {"subnet": "10.0.0.1/32"}, {"names": ()},
                                {"aliases": ("../x",)}, {"cni_version": "0.2.0"}, {"python": "/opt/my env/python"}])
def test_install_bad_input(tmp_path, kw):
    with pytest.raises(InvalidParameter) as e:
        install_cni(tmp_path / "b", tmp_path / "c", **kw)
    assert e.value.hint


def _cli(argv):
    parser = argparse.ArgumentParser(prog="k3snb")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_install(tmp_path, capsys):
    rc = _cli(["cni", "install", "--bin-dir", str(tmp_path / "b"), "--conf-dir", str(tmp_path / "c"),
               "--subnet", "10.66.0.0/16", "--alias", "host-local", "--alias", "loopback"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["host-local", "k3snb", "loopback"]
    conf = json.loads((tmp_path / "c" / "10-k3snb.conflist").read_text())
    assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.66.0.0/16"}]]
    assert "conflist" in capsys.readouterr().out
    with pytest.raises(InvalidParameter):
        _cli(["cni", "install", "--bin-dir", str(tmp_path / "b"), "--conf-dir", str(tmp_path / "c"),
              "--subnet", "nonsense"])


def test_changed_range_reallocates(inst):
    old = add(inst, "mover").addresses[0]
    conf = plugin_conf(inst)
    conf["ipam"]["ranges"] = [[{"subnet": "10.123.0.0/24"}]]
    new = add(inst, "mover", conf=conf).addresses[0]
    assert old.startswith("10.99.0.") and new == "10.123.0.2/24"
    assert inst.allocations()["mover/eth0"]["ips"][0]["address"] == new


def test_chained_after_another_plugin_keeps_prev_result(inst):
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": "/run/netns/t"}],
            "ips": [{"address": "127.0.0.1/8", "interface": 0}], "dns": {"nameservers": ["10.43.0.10"]}}
    r = add(inst, "chained", conf=plugin_conf(inst, prevResult=prev))
    assert r.ok, r.reply
    assert [i["name"] for i in r.reply["interfaces"]] == ["lo", "eth0"]
    assert r.reply["ips"][0]["address"] == "127.0.0.1/8"
    assert r.reply["ips"][1]["interface"] == 1 and r.reply["ips"][1]["address"].startswith("10.99.0.")
    assert r.reply["dns"] == {"nameservers": ["10.43.0.10"]}
