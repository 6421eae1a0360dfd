"""k3s flags as data (k3snb/data/k3s-flags.yaml): junk words and made-up prefixes are refused, every
profile's and workaround's flags are real k3s server flags, the catalogue records its k3s version."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import yaml

from k3snb.errors import InvalidParameter
from k3snb.k3s import get_profile, profile_names, validate_flags
from k3snb.k3s.profiles import k3s_flags

RAW = yaml.safe_load(resources.files("k3snb").joinpath("data/k3s-flags.yaml").read_text())


@pytest.mark.parametrize("flag", ["--a", "--block", "--#", "--noqa:", "--as", "--readable", "--SIM905",
                                  "--etcd-nonsense", "--kube-anything", "--cluster-whatever", "--tls-foo"])
def test_junk_and_made_up_flags_are_refused(flag):
    with pytest.raises(InvalidParameter, match="unknown k3s server flag"):
        validate_flags([flag])


def test_catalogue_is_clean_and_has_provenance():
    assert RAW["k3s_version"] and "k3s-io/k3s" in RAW["source"]
    for cmd in ("server", "agent"):
        names = RAW[cmd]
        assert len(names) == len(set(names)), f"duplicates in {cmd}"
        assert all(re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", n) for n in names), cmd
    assert set(RAW["short"].values()) <= set(RAW["server"]) | set(RAW["agent"])
    for name, v in RAW["later"].items():
        assert v["since"] and set(v["commands"]) <= {"server", "agent"}, name
    flags = k3s_flags()
    assert {"disable-agent", "kubelet-arg", "flannel-backend", "secrets-encryption-provider"} <= flags["server"]
    assert "disable-apiserver-lb" in flags["agent"] and "cluster-init" not in flags["agent"]


@pytest.mark.parametrize("name", profile_names())
def test_every_profile_flag_is_a_known_server_flag(name):
    p = get_profile(name)
    known = k3s_flags()["server"]
    for f in p.all_flags():
        assert f[2:].split("=", 1)[0] in known, (name, f)
    assert validate_flags(p.all_flags()) == p.all_flags()


def test_every_workaround_flag_is_a_known_server_flag():
    from k3snb.workarounds import get_workaround, ids

    known = k3s_flags()["server"]
    for wid in ids():
        for f in get_workaround(wid).flags():
            assert f.startswith("--") and f[2:].split("=", 1)[0] in known, (wid, f)
