"""The state dir holds records that ``doctor --clean`` acts on (kill pids, remove paths), so it
must be private: a non-root user's ``/tmp/k3snb-state-<uid>`` made first by someone else, or left
writable by others, is refused with one clear error; records someone else planted are ignored.

The integration tests run the real CLI as user ``nobody`` against a sticky, world-writable base
dir standing in for /tmp (``XDG_RUNTIME_DIR``), so nothing touches the machine's /tmp state dirs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from k3snb._paths import private_dir
from k3snb._state import Record, records
from k3snb.errors import UnsafeStateDir

NOBODY = 65534


def test_private_dir_refuses_symlinks_and_writable_dirs(tmp_path):
    assert private_dir(tmp_path / "new").stat().st_mode & 0o777 == 0o700
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafeStateDir, match="not a directory"):
        private_dir(tmp_path / "link")
    (tmp_path / "open").mkdir()
    os.chmod(tmp_path / "open", 0o777)
    with pytest.raises(UnsafeStateDir, match=r"writable by others \(mode 0777\)") as e:
        private_dir(tmp_path / "open")
    assert "K3SNB_STATE" in str(e.value)


def test_records_are_written_exclusively_and_planted_files_are_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("K3SNB_STATE", str(tmp_path / "state"))
    rec = Record(kind="tmp", id=f"mine-{uuid.uuid4().hex[:6]}")
    # a symlink planted at the old predictable temp name must not be followed
    victim = tmp_path / "victim"
    victim.write_text("keep")
    private_dir(tmp_path / "state")
    (tmp_path / "state" / f"{rec.file.stem}.tmp").symlink_to(victim)
    rec.save()
    assert victim.read_text() == "keep" and json.loads(rec.file.read_text())["id"] == rec.id
    assert not [p for p in rec.file.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    # a record that is a symlink to some JSON elsewhere is not a record
    other = tmp_path / "elsewhere.json"
    other.write_text(rec.file.read_text().replace(rec.id, "planted"))
    (tmp_path / "state" / "tmp-planted.json").symlink_to(other)
    assert {r.id for r in records()} == {rec.id}


@pytest.fixture
def sticky_base():
    """A /tmp look-alike: sticky and world-writable, so user nobody can create its state dir."""
    base = Path(tempfile.mkdtemp(prefix="k3snb-A-sticky-", dir="/tmp"))
    os.chmod(base, 0o1777)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _plant(state: Path, name: str, victim: Path, uid: int) -> Path:
    rec = {"kind": "tmp", "id": name, "owner_pid": _dead_pid(), "owner_start": 1.0, "created": 0.0,
           "pids": [], "mounts": [], "paths": [str(victim)], "sandboxes": [], "note": "", "pid_starts": {}}
    f = state / f"tmp-{name}.json"
    f.write_text(json.dumps(rec))
    os.chown(f, uid, uid)
    return f


def _victim(base: Path) -> Path:
    v = base / f"k3snb-victim-{uuid.uuid4().hex[:6]}"
    v.mkdir()
    (v / "data").write_text("precious")
    os.chown(v, NOBODY, NOBODY)  # removable by nobody, so only the kit's refusal keeps it
    os.chown(v / "data", NOBODY, NOBODY)
    return v


def _doctor_as_nobody(base: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(base), "XDG_RUNTIME_DIR": str(base),
           "K3SNB_CACHE": str(base / "cache"), "K3SNB_TMP": str(base), "PYTHONDONTWRITEBYTECODE": "1"}

    def drop() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    return subprocess.run([sys.executable, "-m", "k3snb", "doctor", "--clean", "--json"], env=env,
                          preexec_fn=drop, capture_output=True, text=True, timeout=120, cwd=str(base))


@pytest.mark.root
@pytest.mark.parametrize("owner", [0, NOBODY])
def test_a_state_dir_others_can_write_is_refused(sticky_base, owner):
    """Planted 0777 by another uid (root here), or left 0777 by the user: refused, nothing done."""
    state = sticky_base / f"k3snb-state-{NOBODY}"
    state.mkdir()
    os.chmod(state, 0o777)
    os.chown(state, owner, owner)
    victim = _victim(sticky_base)
    _plant(state, "evil", victim, NOBODY)
    r = _doctor_as_nobody(sticky_base)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "error:" in r.stderr and "fix:" in r.stderr
    why = "belongs to uid 0" if owner == 0 else "writable by others"
    assert why in r.stderr and str(state) in r.stderr
    assert (victim / "data").read_text() == "precious"


@pytest.mark.root
def test_records_planted_by_someone_else_are_not_acted_on(sticky_base):
    """In the user's own private state dir, a record file owned by another uid is ignored, while
    the user's own stale record is reaped as usual."""
    state = sticky_base / f"k3snb-state-{NOBODY}"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    victim, own = _victim(sticky_base), _victim(sticky_base)
    _plant(state, "planted", victim, 0)
    _plant(state, "own", own, NOBODY)
    r = _doctor_as_nobody(sticky_base)
    out = json.loads(r.stdout)
    cleaned = {c["record"] for c in out["cleaned"]}
    assert "tmp-own" in cleaned and "tmp-planted" not in cleaned, out
    assert (victim / "data").read_text() == "precious"
    assert not own.exists()
