"""Sweeps (issue 13): --matrix cells, local --workers, and a real Dask cluster on loopback.

The cluster is real: a `distributed` scheduler and two `k3snb worker` processes started here. Cells
use the cheap fixture notebook tests/notebooks/env.ipynb (it records the runner spec it was given
and sleeps; nothing is started in a sandbox unless asked), so the tests measure the plumbing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k3snb._procfs import descendants, proc_environ, proc_state

ROOT = Path(__file__).resolve().parent.parent
REG = ROOT / "tests" / "notebooks" / "experiments.yaml"


@pytest.fixture
def kit_env(tmp_path):
    dirs = {n: tmp_path / n for n in ("state", "tmp")}
    for d in dirs.values():
        d.mkdir()
    return {**os.environ, "K3SNB_STATE": str(dirs["state"]), "K3SNB_TMP": str(dirs["tmp"])}, dirs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log(path: Path):
    return open(path, "wb")  # noqa: SIM115 - the child process owns it


class Cluster:
    """A scheduler and N `k3snb worker` processes on loopback, all started (and stopped) by the test."""

    def __init__(self, env: dict[str, str], tmp: Path, n: int = 2) -> None:
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.env = env
        self.tmp = tmp
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=_log(tmp / "scheduler.log"), env=env)
        deadline = time.monotonic() + 60
        while True:  # the workers need a listening scheduler
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the scheduler never listened"
                time.sleep(0.3)
        self.workers = [self._worker(i) for i in range(n)]
        self.wait_for(n)

    def _worker(self, i: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "k3snb", "worker", self.address], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=_log(self.tmp / f"worker{i}.log"))

    def wait_for(self, n: int, limit: float = 120) -> None:
        from distributed import Client

        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                with Client(self.address, timeout=10, set_as_default=False) as c:
                    if len(c.scheduler_info()["workers"]) >= n:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise AssertionError(f"{n} workers never joined {self.address}")

    def cell_processes(self, cell: str = "") -> dict[int, list[int]]:
        """Worker pid -> pids of the kit's cell worker processes below it (of one cell, if named)."""
        out = {}
        for w in self.workers:
            pids = []
            for p in descendants(w.pid):
                try:
                    cmd = Path(f"/proc/{p}/cmdline").read_bytes()
                    if b"k3snb.experiments._worker" in cmd and f'"cell": "{cell}'.encode() in cmd:
                        pids.append(p)
                except OSError:
                    pass
            out[w.pid] = pids
        return out

    def stop(self) -> None:
        for p in [*self.workers, self.scheduler]:
            if p.poll() is None:
                p.terminate()
        for p in [*self.workers, self.scheduler]:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


@pytest.fixture
def cluster(kit_env, tmp_path):
    env, _ = kit_env
    c = Cluster(env, tmp_path)
    yield c
    c.stop()


def _run(env, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "k3snb", "run", "--registry", str(REG), "--no-progress", *args],
                          env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _rows(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in json.loads((out / "summary.json").read_text())["rows"]}


def _alive(pids) -> list[int]:
    return [p for p in pids if proc_state(p) not in (None, "Z", "X")]


def _wait(cond, limit: float, what: str):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.runsc
def test_dask_matrix_2x2_gives_four_rows_with_per_cell_facts(cluster, kit_env, tmp_path):
    env, dirs = kit_env
    out = tmp_path / "run"
    r = _run(env, "10", "-m", "runsc=2022,2024", "-m", "platform=systrap,ptrace", "-p", "seconds=0",
             "--scheduler", cluster.address, "--out", str(out))
    rows = _rows(out)
    assert list(rows) == [f"10-env-{b}-{p}" for b in ("2022", "2024") for p in ("systrap", "ptrace")], r.stderr
    for rid, row in rows.items():
        assert (row["runsc"], row["platform"]) == tuple(rid.split("-")[2:]) and row["experiment"] == "10-env"
        if row["status"] == "skipped":  # this machine's 2022 build has no systrap (its own flag list says so)
            assert rid == "10-env-2022-systrap" and "not available with runsc 2022" in row["reason"]
            continue
        assert row["status"] == "passed", row
        assert row["worker"].startswith("tcp://127.0.0.1:") and row["host"] and row["host_kernel"] == os.uname().release
        assert "2024=" in row["runsc_builds"] and row["platform_used"] == row["platform"]
        res = json.loads((out / rid / "results.json").read_text())  # the remote files came home
        assert res["records"]["runner"] == f"gvisor:{row['runsc']}:{row['platform']}"
        assert (out / rid / "env.ipynb").is_file() and "Executing" in (out / rid / "log.txt").read_text()
    assert r.returncode == 0, r.stderr
    # requirements are the worker's to judge: a program missing there is a skipped row naming the worker
    r = _run(env, "04", "--scheduler", cluster.address, "--out", str(tmp_path / "run2"))
    (row,) = _rows(tmp_path / "run2").values()
    assert row["status"] == "skipped" and row["reason"].endswith("program 'k3snb-no-such-program' not on PATH")
    assert row["reason"].startswith(f"on {os.uname().nodename}: ") and r.returncode == 0, r.stderr
    assert list(dirs["state"].iterdir()) == []
    assert [p.name for p in dirs["tmp"].iterdir() if not p.name.startswith("k3snb-dask-worker-")] == []
    cluster.stop()  # the workers remove their scratch dirs when stopped
    assert list(dirs["tmp"].iterdir()) == []


@pytest.mark.slow
def test_dask_worker_lost_mid_cell_is_retried_once_then_failed(cluster, kit_env, tmp_path):
    """Kill the Dask worker running the long cell, then the one running its retry: a failed row with the
    reason, never a hang; the short cell that finished meanwhile is kept."""
    env, dirs = kit_env
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "k3snb", "run", "--registry", str(REG), "--no-progress", "10",
                          "--runner", "host", "-m", "seconds=0,120", "--scheduler", cluster.address, "--out", str(out)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    long = "10-env-seconds=120"
    try:
        _wait(lambda: (out / "10-env-seconds=0" / "results.json").is_file(), 240, "the short cell to come home")
        killed, tags = [], []
        for attempt in (1, 2):
            busy = _wait(lambda: [w for w, cells in cluster.cell_processes(long).items() if cells and w not in killed],
                         180, f"the long cell to start (attempt {attempt})")
            cells = cluster.cell_processes(long)[busy[0]]
            tags.append(proc_environ(cells[0]).get("K3SNB_RUN_TAG"))
            os.kill(busy[0], signal.SIGKILL)  # the Dask worker dies mid-cell
            killed.append(busy[0])
            _wait(lambda cells=cells: not _alive(cells) or None, 10, "the cell's processes to die with their worker")
        stdout, stderr = p.communicate(timeout=120)  # never a hang
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1, stderr
    rows = _rows(out)
    assert rows["10-env-seconds=0"]["status"] == "passed"  # finished cells are never lost
    row = rows[long]
    assert row["status"] == "failed" and "lost twice" in row["reason"] and "retried once" in row["reason"], row
    assert all(_alive([w]) == [] for w in killed)
    # each attempt has its own tag: the lost attempt's teardown kills what carries its tag, never the retry
    assert len(set(tags)) == 2 and all(t and t.endswith(f"/{long}") for t in tags), tags


@pytest.mark.slow
def test_dask_ctrl_c_stops_the_cells_on_both_workers(cluster, kit_env, tmp_path):
    env, dirs = kit_env
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "k3snb", "run", "--registry", str(REG), "--no-progress", "10",
                          "--runner", "host", "-m", "label=a,b", "-p", "seconds=300", "--scheduler", cluster.address,
                          "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: all(cluster.cell_processes().values()) or None, 180, "a cell on each worker")
        kernels = [k for w in cluster.workers for k in descendants(w.pid)]
        p.send_signal(signal.SIGINT)
        _, stderr = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, stderr
    _wait(lambda: not _alive(kernels) or None, 15, "nothing of the run left on the workers")
    assert all(descendants(w.pid) == [] for w in cluster.workers)  # the workers themselves stay up
    assert all(w.poll() is None for w in cluster.workers)
    rows = _rows(out)
    assert sorted(rows) == ["10-env-label=a", "10-env-label=b"]
    assert all(r["status"] == "failed" and r["reason"] == "interrupted" for r in rows.values()), rows
    assert list(dirs["state"].iterdir()) == []


@pytest.mark.slow
def test_local_workers_2_give_the_same_results_as_workers_1(kit_env, tmp_path):
    env, dirs = kit_env
    results = {}
    for n in (1, 2):
        out = tmp_path / f"run{n}"
        r = _run(env, "10", "--runner", "host", "-m", "label=a,b", "-p", "seconds=0",
                 "--workers", str(n), "--out", str(out))
        assert r.returncode == 0, r.stderr
        keep = ("id", "experiment", "runner", "label", "status", "reason", "inconclusive")
        results[n] = [{k: row.get(k) for k in keep} for row in _rows(out).values()]
        for row in results[n]:
            res = json.loads((out / row["id"] / "results.json").read_text())
            row["records"] = {k: v for k, v in res["records"].items()}
    assert results[1] == results[2]
    assert [r["id"] for r in results[1]] == ["10-env-label=a", "10-env-label=b"]
    assert [r["records"]["label"] for r in results[1]] == ["a", "b"]
    assert list(dirs["state"].iterdir()) == []


def test_worker_refuses_a_malformed_address_at_once_and_names_an_unreachable_one(kit_env):
    """A malformed address is a usage error before anything is prepared; an address nobody listens at is
    announced on stderr (what it waits for, how long), then one error/fix pair when the wait ends."""
    env, dirs = kit_env
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "k3snb", "worker", "bogus"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)  # no readiness JSON: nothing was done
    assert "error: malformed scheduler address 'bogus'" in r.stderr and "fix: pass k3snb worker tcp://" in r.stderr
    assert time.monotonic() - t0 < 30

    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "k3snb", "worker", address, "--timeout", "2"], env=env,
                       capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    assert "root" in json.loads(r.stdout)  # readiness comes first, as for a worker that will serve
    lines = r.stderr.splitlines()
    assert f"waiting up to 2 s for the Dask scheduler at {address}" in lines[0], lines
    assert f"error: no Dask scheduler at {address} after waiting 2 s" in r.stderr
    assert "fix:" in r.stderr and "--timeout S" in r.stderr.split("fix:")[1]
    assert 2 <= took < 30
    assert list(dirs["state"].iterdir()) == [] and list(dirs["tmp"].iterdir()) == []  # no scratch dir made
