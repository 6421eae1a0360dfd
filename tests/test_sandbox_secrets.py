"""The GVisor runner binds the host's root read-only, so it masks the host's secrets: shadow files,
SSH host keys, /root, /home and the kit's state dir read as empty inside a real sandbox, while the
kit (its venv, source and /usr) keeps working there (issue 12 item 8)."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from k3snb._state import Record
from k3snb.runners import _oci, resolve

BUILDS = ["gvisor:2022", pytest.param("gvisor:2024", marks=pytest.mark.runsc2024)]


def test_masks_cover_the_secrets_and_spare_the_kit(tmp_path):
    empty = tmp_path / "empty"
    empty.touch()
    masks = _oci.secret_masks(str(empty), ["/var/cache/k3snb-state-x", "/run/k3snb"])
    dests = {m["destination"]: m for m in masks}
    assert dests["/root"]["type"] == "tmpfs" and "/home" in dests
    assert dests["/etc/shadow"] == {"destination": "/etc/shadow", "type": "bind", "source": str(empty),
                                    "options": ["bind", "ro"]}
    assert all(k in dests for k in glob.glob("/etc/ssh/ssh_host_*"))
    assert "/run/k3snb" not in dests  # already under the /run tmpfs
    # a checkout or venv under a masked directory is bound back on top of the mask
    spec = _oci.spec(str(tmp_path), masks=[{"destination": "/root", "type": "tmpfs", "source": "x",
                                            "options": []}], kit_paths=["/root"])
    order = [m["destination"] for m in spec["mounts"]]
    assert order.index("/root") < len(order) - 1 - order[::-1].index("/root")  # mask first, kit bind after
    assert not any(m["destination"].startswith(("/usr", "/work")) for m in masks)


@pytest.mark.root
@pytest.mark.runsc
@pytest.mark.parametrize("spec", BUILDS)
def test_secrets_read_as_nothing_inside_a_real_sandbox(spec):
    host_shadow = Path("/etc/shadow").read_text()
    assert host_shadow and os.listdir("/root")  # the host has them: the test could fail
    marker_dir = tempfile.mkdtemp(prefix="k3snb-A-secret-", dir="/home")  # makes /home non-empty for sure
    state = tempfile.mkdtemp(prefix="k3snb-A-state-", dir="/var/tmp")  # a state dir outside the tmpfs dirs
    old = os.environ.get("K3SNB_STATE")
    os.environ["K3SNB_STATE"] = state
    try:
        rec = Record(kind="tmp", id=f"secret-{uuid.uuid4().hex[:6]}").save()
        with resolve(spec) as g:
            # busybox: GNU ls/cat trip over runsc 2022's statx
            r = g.run("busybox cat /etc/shadow /etc/gshadow; busybox ls -A /root /home; "
                      f"busybox ls -A {state}; busybox cat /etc/ssh/ssh_host_* 2>/dev/null; true", check=True)
            kit = g.run_python(os.path.realpath, __import__("k3snb").__file__)
            usr = g.run("busybox ls /usr/bin/python3", check=True).stdout.strip()
            work = g.run(f"echo ok > {g.workdir}/w && busybox cat {g.workdir}/w", check=True).stdout.strip()
        lines = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.endswith(":")]
        assert lines == [], f"secrets readable inside {spec}: {lines}"
        assert rec.file.exists() and rec.file.name not in r.stdout
        assert kit.endswith("k3snb/__init__.py") and usr == "/usr/bin/python3" and work == "ok"
        rec.drop()
    finally:
        if old is None:
            os.environ.pop("K3SNB_STATE", None)
        else:
            os.environ["K3SNB_STATE"] = old
        shutil.rmtree(marker_dir, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.root
@pytest.mark.runsc
def test_kit_cache_under_a_masked_dir_stays_visible(monkeypatch):
    """The kit's cache (k3s, images) bound back on top of the /home mask; the rest of /home stays hidden."""
    cache = tempfile.mkdtemp(prefix="k3snb-A-cache-", dir="/home")
    other = tempfile.mkdtemp(prefix="k3snb-A-other-", dir="/home")
    try:
        Path(cache, "tool").write_text("cached")
        Path(other, "secret").write_text("hidden")
        monkeypatch.setenv("K3SNB_CACHE", cache)
        with resolve("gvisor:2022") as g:
            seen = g.run(f"busybox cat {cache}/tool; busybox cat {other}/secret 2>/dev/null; true").stdout
        assert seen.strip() == "cached"
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(other, ignore_errors=True)
