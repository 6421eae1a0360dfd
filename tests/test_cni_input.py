"""The CNI plugin's input contract: every malformed call gets spec error JSON on stdout and a non-zero
exit, never a traceback with an empty stdout; `k3snb cni install` refuses bad names and leaves nothing
half-installed. The real installed plugin program is run with CNI_* variables and stdin, as a runtime does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from k3snb.cni import install_cni, make_conflist


@pytest.fixture
def plugin(tmp_path: Path):
    inst = install_cni(tmp_path / "bin", tmp_path / "conf", data_dir=tmp_path / "state")
    conf = make_conflist(data_dir=tmp_path / "state", cni_version="1.1.0")["plugins"][0]
    conf.update(cniVersion="1.1.0", name="k3snb")
    return inst.programs[0], conf


def call(program: Path, command: str, stdin: bytes, **env: str) -> tuple[int, str, str]:
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command, "CNI_CONTAINERID": "ctr1",
         "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0", "CNI_PATH": str(program.parent), **env}
    p = subprocess.run([str(program)], input=stdin, env=e, capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def spec_error(rc: int, out: str, err: str) -> dict:
    assert rc != 0, out
    assert "Traceback" not in err, err
    reply = json.loads(out)  # stdout holds exactly one JSON object
    assert isinstance(reply["code"], int) and reply["msg"] and "cniVersion" in reply, reply
    return reply


def with_(conf: dict, **changes) -> bytes:
    c = json.loads(json.dumps(conf))
    c.update(changes)
    return json.dumps(c).encode()


@pytest.mark.parametrize("command,changes,code,words", [
    ("ADD", {"mtu": "big"}, 7, "mtu must be an integer"),
    ("ADD", {"mtu": 10_000_000}, 7, "mtu must be an integer from 68 to 65535"),
    ("ADD", {"prevResult": {"cniVersion": "1.1.0", "ips": 5}}, 7, "prevResult.ips must be a list"),
    ("CHECK", {"prevResult": {"cniVersion": "1.1.0", "ips": ["10.88.0.2/16"]}}, 7, "prevResult.ips[0]"),
    ("CHECK", {"prevResult": {"cniVersion": "1.1.0", "ips": "10.88.0.2/16"}}, 7, "prevResult.ips must be a list"),
    ("ADD", {"dataDir": 5}, 7, "dataDir must be a string"),
    ("ADD", {"dataDir": "relative/state"}, 7, "dataDir must be an absolute path"),
    ("ADD", {"ipam": {"type": "k3snb", "dataDir": ["x"], "subnet": "10.88.0.0/16"}}, 7, "ipam.dataDir"),
    ("ADD", {"ipam": "host-local"}, 7, "ipam must be an object"),
    ("ADD", {"prevResult": [1]}, 7, "prevResult must be an object"),
    ("DEL", {"cniVersion": 1.1}, 7, "cniVersion must be a string"),
    ("GC", {"cni.dev/valid-attachments": {"containerID": "x"}}, 7, "valid-attachments must be a list"),
])
def test_malformed_fields_get_spec_error_json(plugin, command, changes, code, words):
    program, conf = plugin
    reply = spec_error(*call(program, command, with_(conf, **changes)))
    assert reply["code"] == code and words in reply["msg"], reply


@pytest.mark.parametrize("stdin,code", [
    (b"[" * 200_000 + b"]" * 200_000, 6),  # nesting deeper than any parser allows
    (b'{"cniVersion": "1.1.0", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 6),
    (b"not json at all", 6),
    (b"\xff\xfe\x00garbage", 6),
    (b"[1, 2, 3]", 6),
    (b"", 6),
    (b'{"cniVersion": "1.1.0", "pad": "' + b"x" * (2 << 20) + b'"}', 6),  # megabytes of config
])
def test_undecodable_stdin_gets_spec_error_json(plugin, stdin, code):
    program, _ = plugin
    reply = spec_error(*call(program, "ADD", stdin))
    assert reply["code"] == code, reply


def test_valid_calls_still_work_after_validation(plugin):
    program, conf = plugin
    rc, out, err = call(program, "ADD", with_(conf, mtu=1400))
    assert rc == 0, out + err
    res = json.loads(out)
    assert res["interfaces"][0]["mtu"] == 1400 and res["ips"][0]["address"].startswith("10.88.")
    rc, out, err = call(program, "CHECK", with_(conf, prevResult=res))
    assert rc == 0 and out == "", out + err
    rc, out, _ = call(program, "DEL", with_(conf))
    assert rc == 0


def kit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "k3snb", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("network", ["../x", "a/b", "", ".hidden", "x y", "-dash"])
def test_cni_install_refuses_bad_network_names_and_writes_nothing(tmp_path, network):
    r = kit("cni", "install", "--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "conf"),
            f"--network={network}")
    assert r.returncode == 2 and r.stderr.startswith("error: invalid network name"), r.stderr
    assert "  fix: " in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bin").exists() and not (tmp_path / "conf").exists()
    assert not list(tmp_path.parent.glob("x*.conflist"))


def test_cni_install_failure_removes_the_programs_it_wrote(tmp_path):
    (tmp_path / "file").write_text("a file, so no folder can be made under it")
    r = kit("cni", "install", "--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "file" / "conf"),
            "--alias", "host-local")
    assert r.returncode == 2 and r.stderr.count("error:") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: cannot install into") and "nothing was left behind" in r.stderr
    assert not (tmp_path / "bin").exists()  # neither the programs nor the folder made for them
    # an existing bin dir is kept, only this call's programs go
    (tmp_path / "bin2").mkdir()
    (tmp_path / "bin2" / "other").write_text("someone else's")
    r = kit("cni", "install", "--bin-dir", str(tmp_path / "bin2"), "--conf-dir", str(tmp_path / "file" / "conf"))
    assert r.returncode == 2
    r = kit("cni", "install", "--bin-dir", "/proc/k3snb-x", "--conf-dir", str(tmp_path / "conf"))
    assert r.returncode == 2 and r.stderr.startswith("error: cannot create bin_dir /proc/k3snb-x"), r.stderr
    assert sorted(p.name for p in (tmp_path / "bin2").iterdir()) == ["other"]
