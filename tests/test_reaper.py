"""The reaper against real leftovers: kill -9 a Python process holding a sandbox, then clean()."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k3snb import _doctor as _cli
from k3snb import _doctor as reaper  # doctor() / clean() / register(): the report around the reaper
from k3snb._state import Record, records
from k3snb.runners.gvisor import pids_with_root

HOLDER = r"""
import sys, time
from k3snb.runners.gvisor import GVisor
from k3snb.runners.host import Host
kind = sys.argv[1]
r = (GVisor() if kind == "gvisor" else Host(pid=(kind == "host"))).start()
if kind == "gvisor":
    sp = r.spawn("echo up; exec sleep 4747")
else:
    r.run(f"mkdir -p {r.workdir}/m && mount -t tmpfs k3snb-reaper-tmpfs {r.workdir}/m", check=True)
    sp = r.spawn("echo up; exec sleep 4848")
    r.run("sleep 4850 >/dev/null 2>&1 &")  # a daemon: without a pid namespace only the mount ns finds it
while "up" not in sp.stdout_path.read_text():  # the background process runs before we report
    time.sleep(0.02)
time.sleep(0.1)
print(r.workdir, flush=True)
time.sleep(600)
"""


@pytest.fixture
def private_state(tmp_path, monkeypatch):
    """A state dir of our own, so clean() sees only this test's records (others may run in parallel)."""
    d = tmp_path / "state"
    d.mkdir()
    monkeypatch.setenv("K3SNB_STATE", str(d))
    return d


def _procs_with(marker: bytes) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if marker in Path(f"/proc/{d}/cmdline").read_bytes():
                    out.append(int(d))
            except OSError:
                pass
    return out


def _start_and_kill9(kind: str) -> tuple[Path, subprocess.Popen]:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, kind], stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        work = Path(p.stdout.readline().strip())
        assert work.is_dir(), "holder did not start"
    finally:
        p.kill()  # SIGKILL: no finally blocks, no close()
        p.wait()
        p.stdout.close()
    return work, p


@pytest.mark.root
@pytest.mark.runsc
def test_kill9_gvisor_owner_then_clean(private_state):
    work, _ = _start_and_kill9("gvisor")
    base = work.parent
    root = str(base / "state")
    try:
        time.sleep(0.3)
        assert pids_with_root(root), "the orphaned sandbox should still run before clean()"
        (rec,) = records()
        assert rec.kind == "gvisor" and not rec.owner_alive()
        d = reaper.doctor()
        assert [s["record"] for s in d.stale] == [f"gvisor-{rec.id}"]
        assert "stale gvisor-" in repr(d)
    finally:
        cleaned = reaper.clean()  # also when an assertion above failed: leave nothing running
    assert cleaned.cleaned and not cleaned.stale
    assert not pids_with_root(root) and not _procs_with(b"sleep\x004747")
    assert not base.exists() and records() == []
    assert not any(Path("/sys/fs/cgroup").glob(f"*/{rec.id}*"))


@pytest.mark.root
@pytest.mark.parametrize("kind", ["host", "host-nopid"])
def test_kill9_host_owner_then_clean(private_state, kind):
    work, _ = _start_and_kill9(kind)
    try:
        (rec,) = records()
        assert rec.kind == "host" and _procs_with(b"sleep\x004848") and _procs_with(b"sleep\x004850")
    finally:
        reaper.clean()
    deadline = time.monotonic() + 3
    while (_procs_with(b"sleep\x004848") or _procs_with(b"sleep\x004850")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _procs_with(b"sleep\x004848") and not _procs_with(b"sleep\x004850")
    assert not work.exists() and records() == []
    assert "k3snb-reaper-tmpfs" not in Path("/proc/self/mountinfo").read_text()


def test_clean_touches_only_what_is_tagged(private_state, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    victim = subprocess.Popen(["sleep", "300"])  # a live process whose pid a record claims, wrong start time
    untagged = tmp_path / "precious"
    untagged.mkdir()
    tagged = tmp_path / "k3snb-leftover-x"
    tagged.mkdir()
    live = Record(kind="tmp", id="live", paths=[str(tmp_path / "k3snb-live")]).save()  # owned by us: alive
    (tmp_path / "k3snb-live").mkdir()
    try:
        stale = Record(kind="tmp", id="stale", owner_pid=dead_pid, owner_start=1.0,
                       pids=[victim.pid], pid_starts={str(victim.pid): 12345.0},
                       paths=[str(untagged), str(tagged)]).save()
        assert not stale.owner_alive() and live.owner_alive()
        report = reaper.clean()
        (entry,) = [c for c in report.cleaned if c["record"] == "tmp-stale"]
        assert victim.poll() is None  # pid reused by someone else: left alone
        assert untagged.is_dir() and any("precious" in k for k in entry["kept"])
        assert not tagged.exists()
        assert (tmp_path / "k3snb-live").is_dir() and "live" in {r.id for r in records()}
    finally:
        victim.kill()
        victim.wait()
        live.drop()


def test_doctor_reports_installed_and_cli(private_state, capsys):
    d = reaper.doctor()
    items = {r["item"]: r for r in d.installed}
    assert {"runsc 2022", "runsc 2024", "runc", "containerd", "CNI plugins", "k3s"} <= set(items)
    assert items["runc"]["available"] == bool(items["runc"]["path"])
    assert "<dl" in d._repr_html_()
    ap = argparse.ArgumentParser()
    _cli.register(ap.add_subparsers())
    args = ap.parse_args(["doctor", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["stale_records"] == 0 and out["installed"]
    args = ap.parse_args(["doctor", "--clean"])
    assert args.func(args) == 0


def test_doctor_cli_subprocess_exit_code(private_state):
    r = subprocess.run([sys.executable, "-m", "k3snb", "doctor", "--json"], capture_output=True, text=True,
                       timeout=60, env=os.environ)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"]["components"] >= 6


@pytest.fixture(autouse=True)
def _no_signal_leak():
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.mark.root
@pytest.mark.runsc
def test_interpreter_exit_without_close_cleans_up(private_state):
    # a notebook kernel that exits normally but never called close(): atexit closes open runners
    code = ("from k3snb.runners.gvisor import GVisor; from k3snb.runners.host import Host\n"
            "g = GVisor().start(); h = Host().start(); print(g.workdir, h.workdir)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ)
    gwork, hwork = (Path(p) for p in r.stdout.split())
    assert not gwork.parent.exists() and not hwork.exists()
    assert not pids_with_root(str(gwork.parent / "state")) and records() == []


RUN_HOLDER = r"""
import os, subprocess, sys, time
from pathlib import Path
from k3snb._state import RUN_TAG_ENV, Record
from k3snb.runners.gvisor import GVisor
run = Path(sys.argv[1])
kit = run / ".k3snb-kit"
kit.mkdir(parents=True)
rec = Record(kind="run", id=sys.argv[2], paths=[str(kit)], note=str(run)).save()
os.environ[RUN_TAG_ENV] = f"{rec.id}/cell-0"
# a worker in its own session, as `k3snb run` starts it: a kill -9 of the run does not reach it
subprocess.Popen(["sleep", "4949"], start_new_session=True)
g = GVisor().start()  # the sandbox's runsc processes inherit the tag too
print("up", flush=True)
time.sleep(600)
"""


@pytest.mark.root
@pytest.mark.runsc
def test_doctor_reports_and_cleans_live_orphans_of_a_killed_run(private_state, tmp_path):
    """kill -9 of a run: its tagged worker and sandbox keep running; doctor lists them as orphans
    by tag, --clean kills them and removes the run's .k3snb-kit folder (issue 12 item 1)."""
    from k3snb._state import RUN_TAG_ENV

    rid = f"run-test{os.getpid()}"
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", RUN_HOLDER, str(run), rid], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "K3SNB_STATE": str(private_state)})
    bystander = subprocess.Popen(["sleep", "5050"], env={**os.environ, RUN_TAG_ENV: "run-someone-else/cell"})
    live = Record(kind="run", id="run-live-test").save()  # owner alive: its tagged processes are not orphans
    alive_tagged = subprocess.Popen(["sleep", "5151"], env={**os.environ, RUN_TAG_ENV: f"{live.id}/cell"})
    try:
        assert p.stdout.readline().strip() == "up"
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        d = reaper.doctor()
        tagged = {o["pid"]: o for o in d.orphans}
        cmds = " ".join(o["cmd"] for o in d.orphans)
        assert "sleep 4949" in cmds and "runsc" in cmds, d.orphans
        assert {o["record"] for o in d.orphans} == {f"run-{rid}"}
        assert bystander.pid not in tagged and alive_tagged.pid not in tagged
        assert "orphan pid" in d._repr_text()
        c = reaper.doctor(clean=True)
        assert c.orphans == [] and not c.stale, (c.orphans, c.stale, c.cleaned)
        assert not _procs_with(b"sleep\x004949")
        assert all(not Path(f"/proc/{pid}").exists() or
                   (Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX") for pid in tagged)
        assert not (run / ".k3snb-kit").exists() and run.exists()
        assert bystander.poll() is None and alive_tagged.poll() is None  # never touched
    finally:
        for q in (p, bystander, alive_tagged):
            with contextlib.suppress(ProcessLookupError):
                q.kill()
            q.wait()
        live.drop()
        for pid in _procs_with(b"sleep\x004949"):
            os.kill(pid, signal.SIGKILL)
