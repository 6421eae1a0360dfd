"""Runner specs are parsed in one place; runners report capabilities and ignored options.

Capabilities are checked against what commands really see inside each runner.
"""

from __future__ import annotations

import os
import uuid

import pytest

import k3snb
from k3snb.errors import InvalidParameter
from k3snb.runners import GVisor, Host, expand_spec, format_spec, ignored_by, parse_spec, resolve, spec_label


@pytest.mark.parametrize(("spec", "name", "opts", "label"), [
    (None, "host", {}, "host"),
    ("host", "host", {}, "host"),
    ("gvisor", "gvisor", {}, "gvisor-2022"),
    ("gvisor:2024", "gvisor", {"runsc": "2024"}, "gvisor-2024"),
    ("gvisor:2024:ptrace", "gvisor", {"runsc": "2024", "platform": "ptrace"}, "gvisor-2024"),
    ("gvisor:2022:systrap", "gvisor", {"runsc": "2022", "platform": "systrap"}, "gvisor-2022"),
    ("gvisor::ptrace", "gvisor", {"platform": "ptrace"}, "gvisor-2022"),
    ("/usr/bin/runsc", "gvisor", {"runsc": "/usr/bin/runsc"}, "gvisor"),
    ("gvisor:/opt/my runsc/runsc:kvm", "gvisor", {"runsc": "/opt/my runsc/runsc", "platform": "kvm"}, "gvisor"),
])
def test_parse_spec(spec, name, opts, label):
    assert parse_spec(spec) == (name, opts)
    assert spec_label(spec) == label
    if spec:
        assert format_spec(name, **opts) == spec.strip() or spec.startswith("/")  # the inverse


def test_expand_spec_per_runsc_build():
    assert expand_spec("gvisor", ["2022", "2024"]) == ["gvisor:2022", "gvisor:2024"]
    assert expand_spec("gvisor::ptrace", ["2024"]) == ["gvisor:2024:ptrace"]
    assert expand_spec("gvisor:2022", ["2022", "2024"]) == ["gvisor:2022"]
    assert expand_spec("host", ["2022", "2024"]) == ["host"]
    assert format_spec("host", runsc="2024") == "host"
    from k3snb.runners import requirements

    assert requirements("gvisor:2024:ptrace") == ("root", "runsc") and requirements("host") == ()


@pytest.mark.parametrize(("spec", "match"), [
    ("docker", "unknown runner 'docker'; valid: gvisor, host"),
    ("gvisor:2023", "unknown runsc build '2023'"),
    ("gvisor:2024:hyper", "unknown platform 'hyper'"),
    ("gvisor:2024:ptrace:x", "too many"),
    ("host:2024", "takes no ':' parameters"),
    ("", "bad runner spec"),
    (5, "bad runner spec"),
])
def test_bad_specs_are_one_clear_error(spec, match):
    with pytest.raises(InvalidParameter, match=match) as e:
        parse_spec(spec)
    assert "gvisor:2024" in e.value.hint


def test_host_records_sandbox_options_as_ignored():
    h = resolve("host", runsc="2024", net_raw=True, cgroupfs=False, pid=False)
    assert isinstance(h, Host) and not h.pid_ns
    assert h.ignored_options == {"runsc": "2024", "net_raw": True}  # False changes nothing: not listed
    assert h.info()["ignored_options"] == ["net_raw", "runsc"]
    assert ignored_by("host", runsc="2024", net_raw=False) == ["runsc"]
    assert ignored_by("gvisor", runsc="2024", pid=True) == ["pid"]
    with pytest.raises(InvalidParameter, match=r"unknown Host option\(s\) \['colour'\]"):
        resolve("host", colour="red")
    assert k3snb.get_runner("host").kind == "host"  # the old name still works


def test_options_must_not_contradict_the_spec_or_a_runner_object():
    with pytest.raises(InvalidParameter, match="says runsc='2024' but the option says runsc='2022'"):
        resolve("gvisor:2024", runsc="2022")
    h = Host()
    assert resolve(h) is h
    with pytest.raises(InvalidParameter, match="only apply to a runner name"):
        resolve(h, runsc="2024")


@pytest.mark.root
@pytest.mark.runsc
def test_spec_builds_the_runner_it_names():
    g = resolve("gvisor:2022:ptrace", net_raw=True)
    assert isinstance(g, GVisor) and g.platform == "ptrace" and g.net_raw and g.label == "gvisor-2022"
    assert "--platform=ptrace" in g.flags()
    with pytest.raises(InvalidParameter, match="'systrap' does not exist in the 2022 runsc build"):
        resolve("gvisor:2022:systrap")
    assert resolve("/usr/bin/runsc").runsc_path == GVisor(runsc="/usr/bin/runsc").runsc_path


def _facts_inside(r) -> dict[str, str]:
    """What commands really see inside runner ``r``."""
    tag = f"k3snb-spec-{uuid.uuid4().hex[:8]}"
    res = r.run(f"awk '$5 == \"/\" {{ for (i = 7; $i != \"-\"; i++); print $(i+1) }}' /proc/self/mountinfo"
                f" | tail -1; touch /tmp/{tag} && echo made; ls /sys/fs/cgroup | head -3", check=True)
    lines = res.stdout.splitlines()
    host_sees = os.path.exists(f"/tmp/{tag}")
    if host_sees:
        os.unlink(f"/tmp/{tag}")
    return {"root_fstype": lines[0], "tmp_shared": host_sees, "cgroup": " ".join(lines[2:])}


@pytest.mark.root
def test_host_capabilities_match_what_commands_see():
    with Host() as h:
        caps, seen = h.capabilities, _facts_inside(h)
    assert caps.root_fstype == seen["root_fstype"]
    assert caps.private_tmp is False and seen["tmp_shared"]
    assert caps.has_real_cgroups and seen["cgroup"]
    assert caps.private_pids and not caps.own_kernel and caps.host_network_writable


@pytest.mark.root
@pytest.mark.runsc
@pytest.mark.parametrize("spec", ["gvisor:2022", pytest.param("gvisor:2024", marks=pytest.mark.runsc2024)])
def test_gvisor_capabilities_match_what_commands_see(spec):
    with resolve(spec) as g:
        caps, seen = g.capabilities, _facts_inside(g)
        uname_v = g.run("uname -v").stdout.strip()
        assert set(g.sandbox_pids()) >= set(g.host_pids().values())
    assert caps.root_fstype == seen["root_fstype"] == "9p"
    assert caps.private_tmp and not seen["tmp_shared"]
    assert caps.own_kernel and uname_v != os.uname().version
    assert not caps.has_real_cgroups and not caps.host_network_writable and caps.needs_net_raw


@pytest.mark.root
def test_started_runners_are_logged_for_the_experiment_layer(tmp_path, monkeypatch):
    """With $K3SNB_RUNNERS_LOG set, every started runner appends its info() (what really ran)."""
    log = tmp_path / "runners.jsonl"
    monkeypatch.setenv("K3SNB_RUNNERS_LOG", str(log))
    with resolve("host", runsc="2024"):
        pass
    import json

    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert rows == [{**rows[0], "kind": "host", "label": "host", "ignored_options": ["runsc"]}]
