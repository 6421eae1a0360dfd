"""k3snb.probe: the /proc/sys key list, probes of the host and of gVisor 2022/2024, diff, claims, CLI.

Live probes run once per environment (module fixtures); every expectation about the host is
measured independently here (os.uname, stat -f, os.path.exists), not hard-coded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from k3snb.errors import InvalidParameter, UsageError
from k3snb.probing import EnvProbe, diff, probe, procsys_keys
from k3snb.probing._collect import collect

REPO = Path(__file__).resolve().parents[1]
KUBELET_SIX = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
               "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
               "kernel/keys/root_maxbytes": "25000000"}
GVISOR_MISSING = ("kernel/panic", "vm/panic_on_oom", "kernel/keys/root_maxkeys")
JSON_KEYS = ("kernel_release", "sandbox", "root_fstype", "root_fsmagic", "proc_sys", "dev_kmsg",
             "capabilities", "cgroup", "runsc_version")


def _mount_table() -> list[tuple[str, str, str]]:
    """The host's mounts as (mountpoint, fstype, source), read from pid 1's view and ours."""
    out = []
    for f in ("/proc/self/mountinfo", "/proc/1/mountinfo"):
        for line in Path(f).read_text().splitlines():
            left, _, right = line.partition(" - ")
            out.append((left.split()[4], right.split()[0], right.split()[1]))
    return sorted(out)


@pytest.fixture(scope="module")
def host_probe():
    before = _mount_table()
    p = probe("host")
    assert _mount_table() == before, "probing the host changed the host mount table"
    return p


@pytest.fixture(scope="module")
def gvisor_2022():
    before = _mount_table()
    p = probe("gvisor", runsc="2022")
    assert _mount_table() == before, "probing gVisor changed the host mount table"
    return p


@pytest.fixture(scope="module")
def gvisor_2024():
    return probe("gvisor", runsc="2024")


# --- the key list ----------------------------------------------------------------------------
def test_procsys_yaml_covers_the_kubernetes_stack():
    keys = procsys_keys()
    by_key = {k["key"]: k for k in keys}
    assert len(by_key) == len(keys), "duplicate keys"
    for key, value in KUBELET_SIX.items():
        assert by_key[key]["kubelet_value"] == value
        assert by_key[key]["access"] == "rw" and "kubelet" in by_key[key]["users"]
    for key in ("kernel/cap_last_cap", "net/netfilter/nf_conntrack_max", "net/ipv4/conf/all/route_localnet",
                "net/bridge/bridge-nf-call-iptables", "net/ipv4/ip_unprivileged_port_start",
                "net/ipv4/ping_group_range", "kernel/pid_max", "kernel/threads-max", "net/ipv4/ip_forward",
                "fs/inotify/max_user_watches", "net/ipv4/conf/all/rp_filter"):
        assert key in by_key, key
    for k in keys:
        assert set(k) >= {"key", "users", "access", "linux_default"}, k
        assert not k["key"].startswith("/") and isinstance(k["linux_default"], str)
    keys[0]["key"] = "mutated"
    assert procsys_keys()[0]["key"] != "mutated", "procsys_keys() must return a copy"


# --- host ------------------------------------------------------------------------------------
@pytest.mark.root
def test_host_probe_reports_host_facts(host_probe):
    p = host_probe
    assert p.label == "host" and p.data["runner"]["kind"] == "host"
    assert p["kernel.release"] == os.uname().release
    magic = subprocess.run(["stat", "-f", "-c", "%t", "/"], capture_output=True, text=True, check=True).stdout
    assert int(p.data["root_fsmagic"], 16) == int(magic, 16)
    assert p["dev.kmsg"] == ("present" if os.path.exists("/dev/kmsg") else "absent")
    assert p.kind != "gvisor"
    assert p.data["runsc_version"] is None
    # every probed key is present exactly when the host has it (same kernel, same net ns)
    for key, rec in p.data["proc_sys"].items():
        assert rec["present"] == os.path.exists(f"/proc/sys/{key}"), key
    present = [r for r in p.data["proc_sys"].values() if r["present"]]
    assert len(present) >= 0.8 * len(p.data["proc_sys"])
    assert p.proc_sys("kernel/cap_last_cap")["value"] == Path("/proc/sys/kernel/cap_last_cap").read_text().strip()


@pytest.mark.root
def test_host_probe_never_writes_proc_sys(host_probe):
    assert host_probe.data["proc_sys_write_back"] is False
    methods = {r["method"] for r in host_probe.data["proc_sys"].values() if r["present"]}
    assert methods == {"open(O_WRONLY), no write"}
    # cap_last_cap is 0444 on Linux: judged not writable without writing
    assert host_probe.proc_sys("kernel/cap_last_cap")["writable"] is False
    # even when asked, the collector refuses to write outside gVisor
    out = collect(["kernel/panic"], write_back=True)
    assert out["proc_sys_write_back"] is False
    assert out["proc_sys"]["kernel/panic"]["method"] == "open(O_WRONLY), no write"


@pytest.mark.root
def test_host_probe_has_faces(host_probe):
    p = host_probe
    assert len(p) >= 40
    df = p.to_frame()
    assert list(df.columns) == ["fact", "value", "detail"] and len(df) == len(p)
    d = json.loads(p.to_json())
    for key in JSON_KEYS:
        assert key in d, key
    assert {"present", "writable", "value"} <= set(d["proc_sys"]["kernel/panic"])
    again = EnvProbe(d)
    assert again.facts == p.facts
    html = p._repr_html_()
    assert "k3snb-text-fallback" in html and "kernel.release" in html
    assert repr(p).startswith("<EnvProbe host:")


@pytest.mark.root
def test_host_mount_experiments_ran_isolated(host_probe):
    mo = host_probe.data["mount_ops"]
    assert mo["isolation"].startswith("fresh mount ns")
    # the Linux host supports everything OCI runtimes need
    for op in ("tmpfs", "bind", "rbind", "bind_remount_ro", "overlay", "pivot_root"):
        assert mo[op] == "ok", (op, mo[op])


# --- gVisor ----------------------------------------------------------------------------------
def _gvisor_common(p: EnvProbe) -> None:
    assert p.kind == "gvisor"
    assert p.data["root_fstype"] == "9p" and p.data["root_fsmagic"] == "0x01021997"
    assert p["kernel.release"] == "4.4.0"
    for key in GVISOR_MISSING:
        assert p.proc_sys(key)["present"] is False, key
    assert p.data["dev_kmsg"]["present"] is False and p["dev.kmsg"] == "absent"
    assert p.data["proc_sys_write_back"] is True
    # gVisor's overcommit_memory exists but rejects writes (the seed's "input/output error")
    oc = p.proc_sys("vm/overcommit_memory")
    assert oc["present"] and oc["writable"] is False and "EIO" in oc["error"]
    assert len(p) >= 40


@pytest.mark.root
@pytest.mark.runsc
def test_gvisor_2022_probe(gvisor_2022):
    p = gvisor_2022
    _gvisor_common(p)
    assert "20221219" in p.data["runsc_version"] and p.label == "gvisor-2022"
    assert p.proc_sys("kernel/cap_last_cap")["present"] is False
    assert p["statx.at_no_automount"] == "EINVAL"
    assert p["mount.rbind"] == "EINVAL"


@pytest.mark.root
@pytest.mark.runsc
@pytest.mark.runsc2024
def test_gvisor_2024_probe(gvisor_2024):
    p = gvisor_2024
    _gvisor_common(p)
    assert "20240729" in p.data["runsc_version"] and p.label == "gvisor-2024"
    assert p.proc_sys("kernel/cap_last_cap")["present"] is True


@pytest.mark.root
@pytest.mark.runsc
def test_diff_host_vs_gvisor(host_probe, gvisor_2022):
    d = diff(host_probe, gvisor_2022)
    for fact in ("rootfs.magic", "kernel.release", "dev.kmsg", "sandbox.kind",
                 *(f"proc_sys.{k}" for k in GVISOR_MISSING)):
        assert fact in d, fact
    assert d["rootfs.magic"] == {"host": host_probe.data["root_fsmagic"], "gvisor-2022": "0x01021997"}
    df = d.to_frame()
    assert list(df.columns) == ["fact", "host", "gvisor-2022", "differs"] and df["differs"].all()
    assert len(d.to_frame(all=True)) > len(df)
    assert "kernel.machine" not in d  # same CPU architecture on both sides


@pytest.mark.root
@pytest.mark.runsc
def test_claims_from_probes(host_probe, gvisor_2022):
    from k3snb.studies.environment import environment_claims

    claims = {v.claim: v for v in environment_claims([host_probe, gvisor_2022])}
    for cid in ("§1.2 9p root", "S01", "S02", "S06", "S40", "S33", "D.3 uid_map"):
        assert claims[cid].status == "reproduced", claims[cid]
    assert claims["§1.3 cap_last_cap"].status == "reproduced"
    assert claims["matrix cap_last_cap 2024"].status == "not-testable"  # no 2024 probe given
    assert claims["§1.1 kernel"].evidence == {"gvisor-2022.kernel_release": "4.4.0"}  # the host is never evidence
    # evidence comes from the probes: a host probe relabelled as gVisor refutes the 9p claim
    fake = EnvProbe(json.loads(host_probe.to_json()), label="not-gvisor")
    fake.data["sandbox"]["kind"] = "gvisor"
    mixed = {v.claim: v for v in environment_claims([gvisor_2022, fake])}
    assert mixed["§1.2 9p root"].status == "inconclusive" and "not-gvisor" in mixed["§1.2 9p root"].reason
    assert {v.status for v in environment_claims([host_probe])} == {"not-testable"}


# --- recorded probes and bad input -----------------------------------------------------------
def test_recorded_probes_load_and_diff():
    files = {p.stem: p for p in (REPO / "data" / "probes").glob("*.json")}
    assert {"host", "gvisor-2022", "gvisor-2024"} <= set(files)
    d = diff(files["host"], files["gvisor-2022"], files["gvisor-2024"])
    assert d.labels == ["host", "gvisor-2022", "gvisor-2024"]
    assert d["proc_sys.kernel/cap_last_cap"]["gvisor-2022"] == "absent"
    assert d["proc_sys.kernel/cap_last_cap"]["gvisor-2024"].endswith("[ro]")


def test_bad_input_gives_one_clear_error(tmp_path):
    with pytest.raises(InvalidParameter, match="runner must be"):
        probe(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameter, match="unknown runner 'dockr'"):
        probe("dockr")
    with pytest.raises(InvalidParameter, match="not a probe record"):
        EnvProbe({"kernel_release": "x"})
    with pytest.raises(InvalidParameter, match="no probe file"):
        EnvProbe.load(tmp_path / "missing.json")
    rec = REPO / "data" / "probes" / "host.json"
    with pytest.raises(InvalidParameter, match="share the label"):
        diff(rec, rec)
    with pytest.raises(UsageError, match="expected an EnvProbe"):
        diff(rec, 5)  # type: ignore[arg-type]
    from k3snb.studies.environment import environment_claims

    with pytest.raises(InvalidParameter) as e:
        environment_claims([])
    assert e.value.hint


@pytest.mark.root
def test_flat_api_probe_is_callable_after_subpackage_import():
    import k3snb.probing  # rebinds k3snb.probe to the sub-package; it must stay callable

    assert k3snb.diff is diff and k3snb.EnvProbe is EnvProbe
    p = k3snb.probe("host", label="again")
    assert isinstance(p, EnvProbe) and p.label == "again"


@pytest.mark.root
def test_cli_json_and_usage_error(tmp_path):
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-m", "k3snb", "probe", "--json", "-o", str(tmp_path / "p.json")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert json.loads((tmp_path / "p.json").read_text())["kernel_release"] == d["kernel_release"]
    assert all(k in d for k in JSON_KEYS) and d["kernel_release"] == os.uname().release
    bad = subprocess.run([sys.executable, "-m", "k3snb", "probe", "--runsc", "2024"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "--runner gvisor" in bad.stderr


@pytest.mark.root
@pytest.mark.runsc
def test_probe_uses_a_given_runner_and_leaves_it_open():
    from k3snb.runners.gvisor import GVisor

    with GVisor(runsc="2022") as g:
        p = probe(g, label="mine")
        assert g.alive(), "probe() must not close a runner it was handed"
        assert g.run("echo still-here").stdout.strip() == "still-here"
        assert p.data["runner"]["id"] == g.info()["id"] and p.label == "mine"
        with pytest.raises(InvalidParameter, match="only apply to a runner name"):
            probe(g, runsc="2024")


def test_html_is_escaped():
    data = json.loads((REPO / "data" / "probes" / "gvisor-2022.json").read_text())
    data["sandbox"]["evidence"] = ["<script>alert(1)</script>"]
    data["label"] = "<b>x</b>"
    html = EnvProbe(data)._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;x&lt;/b&gt;" in html
    d = diff(EnvProbe(data), REPO / "data" / "probes" / "host.json")
    assert "&lt;b&gt;x&lt;/b&gt;" in d._repr_html_() and "<b>x</b>" not in d._repr_html_()
