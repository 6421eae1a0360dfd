
"""The experiment layer: registry, record/verdict, and papermill batch runs on fixture notebooks.

Fixture notebooks in tests/notebooks/ are named by behaviour (ok, broken, sleeps); their registry is
tests/notebooks/experiments.yaml. Runs go through the real CLI in a subprocess, with the kit's state
dir, temp dir and $HOME pointed at fresh folders so "nothing left behind" can be checked exactly.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

import k3snb
from k3snb.errors import InvalidParameter, NotRoot, RunscMissing, UsageError
from k3snb.experiments import _execute, _record
from k3snb.experiments._registry import load_registry

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "notebooks"
REG = FIXTURES / "experiments.yaml"
NOTEBOOKS = ROOT / "notebooks"


# -- registry -----------------------------------------------------------------------------------


def test_packaged_registry_is_valid_and_covers_the_plan():
    reg = load_registry()
    planned = {"00-environment", "01-control-plane", "02-native-worker", "04-ptrace-interception", "05-fake-cni",
               "06-statfs-spoof", "09-ld-preload-vs-static-go", "12-local-storage-flag", "13-ultimate",
               "15-stability", "16-manifests", "24-runc-init-reach", "91-runsc-stability"}
    assert planned <= set(reg.ids)
    for e in reg.entries:
        assert e.notebook == f"{e.id}.ipynb"
        assert e.claims and e.title and e.runners
        assert e.path.parent == NOTEBOOKS


def test_every_registry_entry_has_its_notebook():
    missing = [e.notebook for e in load_registry().entries if not e.path.is_file()]
    assert not missing, f"registry entries without a notebook in notebooks/: {missing}"


def _notebooks() -> list[Path]:
    return sorted(p for p in NOTEBOOKS.glob("*.ipynb") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", [*_notebooks(), NOTEBOOKS / "_template.ipynb"], ids=lambda p: p.name)
def test_notebook_follows_conventions(path):
    """parameters cell, a final verdict cell, the kit kernel, a registry entry and valid registry defaults."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("parameters" in c.metadata.get("tags", []) for c in code), "no cell tagged `parameters`"
    assert "verdict(" in code[-1].source or "conclude(" in code[-1].source, \
        "the last code cell must call k3snb.verdict(...) or studies.conclude(...)"
    assert nb.metadata.kernelspec.name == _execute.KERNEL_NAME
    if path.name.startswith("_"):
        return
    entry = load_registry()[path.stem]
    declared = _execute.notebook_parameters(path)
    assert set(entry.parameters) <= set(declared)


def test_registry_lookup_by_prefix_and_unknown_id():
    reg = load_registry(REG)
    assert reg["02"].id == "02-broken"
    assert reg.select(["01", "01-ok"]) == [reg["01"]]
    with pytest.raises(InvalidParameter, match="unknown experiment 'nope'; valid: 01-ok"):
        reg["nope"]


def test_registry_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("experiments:\n  - {id: x, notebook: x.ipynb, requires: [rooot]}\n")
    with pytest.raises(UsageError, match="unknown requirement"):
        load_registry(bad)


def test_list_experiments_renders():
    table = k3snb.list_experiments()
    assert "00-environment" in repr(table)
    html = table._repr_html_()
    assert "k3snb-text-fallback" in html and "00-environment" in html
    importlib.import_module("k3snb.experiments")  # importing the sub-package must not shadow the function

    assert k3snb.list_experiments().ids == table.ids


def test_skip_reasons_follow_capabilities():
    reg = load_registry(REG)
    assert reg["04"].missing() == ["program 'k3snb-no-such-program' not on PATH"]
    assert reg["01"].missing() == []


# -- parameters ---------------------------------------------------------------------------------


def test_param_values_are_typed_like_papermill():
    assert _execute.parse_params(["a=1", "b=2.5", "c=True", "d=None", "e=x=y", "01:f=text"]) == {
        "a": 1, "b": 2.5, "c": True, "d": None, "e": "x=y", "01:f": "text"}
    with pytest.raises(InvalidParameter, match="malformed parameter 'foo'"):
        _execute.parse_params(["foo"])


# -- record / verdict ---------------------------------------------------------------------------


@pytest.fixture
def memory_results(monkeypatch):
    monkeypatch.delenv("K3SNB_RESULTS", raising=False)
    _record.reset()
    yield
    _record.reset()


def test_record_converts_dataframes_and_rich_results(memory_results):
    import pandas as pd

    df = pd.DataFrame({"key": ["a", "b"], "n": [1, float("nan")]})
    assert k3snb.record("frame", df) is df
    reg = load_registry(REG)
    k3snb.record("registry", reg)
    got = _record.results()
    assert got["records"]["frame"] == [{"key": "a", "n": 1.0}, {"key": "b", "n": None}]
    assert got["records"]["registry"]["rows"][0]["id"] == "01-ok"
    assert got["environment"]["kit_version"] == k3snb.__version__
    assert "runsc" in got["environment"] and "date" in got["environment"]
    with pytest.raises(InvalidParameter, match="cannot record a value of type object"):
        k3snb.record("x", object())


def test_verdict_validates_and_persists(memory_results, tmp_path, monkeypatch):
    with pytest.raises(InvalidParameter, match="unknown verdict status 'works'"):
        k3snb.verdict("C4", "works", {"a": 1}, "r")
    with pytest.raises(InvalidParameter, match="needs evidence"):
        k3snb.verdict("C4", "reproduced", {}, "r")
    with pytest.raises(InvalidParameter, match="needs a reason"):
        k3snb.verdict("C4", "not-testable")
    with pytest.raises(InvalidParameter, match="never recorded"):
        k3snb.verdict("C4", "refuted", ["nope"], "r")

    out = tmp_path / "results.json"
    monkeypatch.setenv("K3SNB_RESULTS", str(out))
    k3snb.record("children_traced", 3)
    v = k3snb.verdict("C4 <ptrace>", "refuted", ["children_traced"], "descendants are traced")
    assert repr(v) == ("<Verdict C4 <ptrace>: ✘ refuted — descendants are traced [evidence: children_traced]>")
    assert "C4 &lt;ptrace&gt;" in v._repr_html_()
    doc = json.loads(out.read_text())
    assert doc["verdicts"] == [{"claim": "C4 <ptrace>", "status": "refuted", "reason": "descendants are traced",
                                "evidence": {"children_traced": 3}, "experiment": None}]
    k3snb.verdict("C4 <ptrace>", "inconclusive", {"extra": [1, 2]}, "second look")  # same claim: replaced
    doc = json.loads(out.read_text())
    assert [x["status"] for x in doc["verdicts"]] == ["inconclusive"]
    assert doc["records"]["extra"] == [1, 2]


# -- batch runs through the CLI -----------------------------------------------------------------


@pytest.fixture
def sandbox_env(tmp_path):
    """Fresh state dir, temp dir and HOME: everything a run could leave behind lands where we can see it."""
    dirs = {n: tmp_path / n for n in ("state", "tmp", "home", "runs")}
    for n in ("state", "tmp", "home"):
        dirs[n].mkdir()
    env = {**os.environ, "K3SNB_STATE": str(dirs["state"]), "TMPDIR": str(dirs["tmp"]), "HOME": str(dirs["home"]),
           "K3SNB_RUNS": str(dirs["runs"]), "K3SNB_TMP": str(dirs["tmp"])}
    for var in ("IPYTHONDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "MPLCONFIGDIR",
                "JUPYTER_PLATFORM_DIRS"):
        env.pop(var, None)  # the run must set these itself
    return env, dirs


def kit(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "k3snb", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _left_behind(dirs) -> list[str]:
    return [str(p) for n in ("state", "tmp", "home") for p in dirs[n].iterdir()]


@pytest.mark.slow
def test_batch_reports_passed_failed_skipped(sandbox_env, tmp_path):
    env, dirs = sandbox_env
    out = tmp_path / "run"
    r = kit(env, "run", "--registry", str(REG), "01", "02", "03", "04", "--out", str(out))
    assert r.returncode == 1, r.stderr
    rows = {row["id"]: row for row in json.loads((out / "summary.json").read_text())["rows"]}
    assert {k: v["status"] for k, v in rows.items()} == {
        "01-ok": "passed", "02-broken": "failed", "03-sleeps": "passed", "04-needs-program": "skipped"}
    assert rows["01-ok"]["reproduced"] == 1 and rows["03-sleeps"]["inconclusive"] == 1
    assert "RuntimeError: fixture broken on purpose" in rows["02-broken"]["reason"]
    assert rows["04-needs-program"]["reason"] == "program 'k3snb-no-such-program' not on PATH"
    # evidence of each run: executed notebooks (the failed one with its error), logs, results, CSV
    broken = nbformat.read(out / "02-broken" / "broken.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in broken.cells if c.cell_type == "code" for o in c.outputs)
    assert "fixture broken on purpose" in (out / "02-broken" / "log.txt").read_text()
    res = json.loads((out / "01-ok" / "results.json").read_text())
    assert res["records"]["squares"] == [0, 1, 4] and res["verdicts"][0]["claim"] == "fixture-ok"
    assert res["environment"]["kit_version"] == k3snb.__version__
    assert (out / "summary.csv").read_text().splitlines()[0].startswith("id,runner,status,reason")
    assert "2 passed, 1 failed, 1 skipped" in r.stdout
    assert not (out / ".kit").exists()
    assert _left_behind(dirs) == []


@pytest.mark.slow
def test_params_runners_and_home_untouched(sandbox_env):
    env, dirs = sandbox_env
    r = kit(env, "run", "--registry", str(REG), "01", "--runner", "host", "--runner", "gvisor",
            "-p", "n=5", "-p", "01:label=scoped")
    assert r.returncode == 0, r.stderr
    (run,) = dirs["runs"].iterdir()  # default folder: runs/<UTC timestamp>
    assert f"results: {run}" in r.stdout
    for runner in ("host", "gvisor"):
        res = json.loads((run / f"01-ok-{runner}" / "results.json").read_text())
        assert res["records"]["squares"] == [0, 1, 4, 9, 16]
        assert res["verdicts"][0]["reason"] == f"label=scoped runner={runner}"
        nb = nbformat.read(run / f"01-ok-{runner}" / "ok.ipynb", as_version=4)
        assert nb.metadata.papermill.parameters == {"runner": runner, "n": 5, "label": "scoped"}
        assert nb.metadata.kernelspec.name == "k3snb"
    assert _left_behind(dirs) == [], "Jupyter/IPython/matplotlib wrote outside the run folder"


@pytest.mark.slow
def test_python_api_returns_a_rich_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("K3SNB_STATE", str(tmp_path / "state"))
    s = k3snb.run_experiments(["01"], out=tmp_path / "run", registry=REG, progress=False)
    assert s.exit_code == 0 and s.counts()["passed"] == 1 and s.counts()["reproduced"] == 1
    assert "01-ok" in s._repr_html_() and "1 passed" in repr(s)
    assert list((tmp_path / "state").iterdir()) == []


@pytest.mark.slow
def test_in_place_stores_outputs_in_the_source(sandbox_env, tmp_path):
    env, dirs = sandbox_env
    src = tmp_path / "nbs"
    src.mkdir()
    shutil.copy(FIXTURES / "ok.ipynb", src)
    shutil.copy(FIXTURES / "broken.ipynb", src)
    (src / "r.yaml").write_text("notebook_dir: .\nexperiments:\n  - {id: 01-ok, notebook: ok.ipynb, runners: [host]}\n"
                                "  - {id: 02-broken, notebook: broken.ipynb, runners: [host]}\n")
    r = kit(env, "run", "--registry", str(src / "r.yaml"), "--in-place", "--out", str(tmp_path / "run"))
    assert r.returncode == 1
    ok = nbformat.read(src / "ok.ipynb", as_version=4)
    assert "fixture-ok" in ok.cells[-1].outputs[0]["data"]["text/plain"]
    assert (src / "broken.ipynb").read_bytes() == (FIXTURES / "broken.ipynb").read_bytes()  # failed: untouched
    assert (tmp_path / "run" / "report.html").read_text().count("02-broken") >= 1


def _wait_for(path: Path, limit: float = 60) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.2)
    raise AssertionError(f"{path} never appeared")


def _processes_of_run(run_dir: Path) -> list[int]:
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("K3SNB_RUN_DIR") == str(run_dir):
                found.append(p.pid)
        except psutil.Error:
            pass
    return found


def _alive(pids) -> list[int]:
    import psutil

    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupt_stops_kernel_and_children(sandbox_env, tmp_path, sig):
    env, dirs = sandbox_env
    marker = tmp_path / "marker"
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "k3snb", "run", "--registry", str(REG), "03", "01", "--out", str(out),
                          "-p", "seconds=600", "-p", f"marker={marker}"],
                         env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = [int(x) for x in _wait_for(marker).split()]  # kernel pid, its `sleep` child
        assert len(list(dirs["state"].iterdir())) == 1  # the run is tagged while it runs
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert _alive(pids) == []
    assert _processes_of_run(out) == []
    rows = {r["id"]: r for r in json.loads((out / "summary.json").read_text())["rows"]}
    assert rows["03-sleeps"]["status"] == "failed" and rows["03-sleeps"]["reason"] == "interrupted"
    assert rows["01-ok"] == {**rows["01-ok"], "status": "skipped", "reason": _execute.NOT_RUN}
    assert not (out / ".kit").exists()
    assert _left_behind(dirs) == []


@pytest.mark.slow
def test_timeout_fails_one_experiment_and_kills_its_processes(sandbox_env, tmp_path):
    env, dirs = sandbox_env
    marker = tmp_path / "marker"
    out = tmp_path / "run"
    r = kit(env, "run", "--registry", str(REG), "03", "01", "--timeout", "20", "--out", str(out),
            "-p", "seconds=600", "-p", f"marker={marker}")
    assert r.returncode == 1
    rows = {row["id"]: row for row in json.loads((out / "summary.json").read_text())["rows"]}
    assert rows["03-sleeps"]["status"] == "failed" and "timed out" in rows["03-sleeps"]["reason"]
    assert rows["01-ok"]["status"] == "passed"  # the next experiment gets a fresh kernel
    assert _alive(int(x) for x in marker.read_text().split()) == []
    assert _left_behind(dirs) == []


@pytest.mark.slow
def test_timeout_limits_the_whole_notebook_not_each_cell(sandbox_env, tmp_path):
    """Issue 12.6: four 3 s cells under a 5 s --timeout fail at ~5 s (per-cell timeouts would pass in ~12 s)."""
    env, dirs = sandbox_env
    out = tmp_path / "run"
    t0 = time.monotonic()
    r = kit(env, "run", "--registry", str(REG), "08", "--timeout", "5", "--out", str(out), "--no-progress")
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    (row,) = json.loads((out / "summary.json").read_text())["rows"]
    assert row["status"] == "failed" and "timed out" in row["reason"] and "5 s" in row["reason"]
    records = json.loads((out / "08-four-cells" / "results.json").read_text())["records"]
    assert "cell3" not in records and "cell4" not in records, records  # 6 s of cells never fit in 5 s
    # the partial notebook is kept; it stopped ~5 s after its first cell began (kernel start-up is not counted)
    nb = nbformat.read(out / "08-four-cells" / "four_cells.ipynb", as_version=4)
    from datetime import datetime

    first = min(datetime.fromisoformat(c.metadata.papermill.start_time) for c in nb.cells
                if c.metadata.get("papermill", {}).get("start_time"))
    ran = (datetime.fromisoformat(nb.metadata.papermill.end_time) - first).total_seconds()
    assert 5 <= ran < 5 + 3, ran
    assert took < 60
    assert _left_behind(dirs) == []


# -- bad input: exit 2, one clear error, nothing left behind ----------------------------------


BAD = {
    "unknown id": (["nope"], "unknown experiment 'nope'"),
    "unknown runner": (["01", "--runner", "docker"], "unknown runner 'docker'"),
    "malformed -p": (["01", "-p", "foo"], "malformed parameter 'foo'"),
    "unknown parameter": (["01", "-p", "nosuch=1"], "unknown parameter 'nosuch'"),
    "unknown scoped parameter": (["01", "02", "-p", "02:label=x"], "unknown parameter 'label' for 02-broken"),
    "parameter no selected notebook has": (["01", "03", "-p", "timeout=60"], "unknown parameter 'timeout'"),
    "explicit runsc missing": (["05", "--runsc", "/nonexistent/runsc"], "runsc path '/nonexistent/runsc' does not exist"),
    "bad runsc build": (["01", "--runsc", "1999"], "unknown runsc version '1999'"),
    "out under a file": (["01", "--out", "{tmp}/afile/run"], "afile does not exist"),
    "out parent missing": (["01", "--out", "{tmp}/nodir/run"], "nodir does not exist"),
    "out in /proc": (["01", "--out", "/proc/k3snb-cannot-exist"], "is not writable"),
    "out not empty": (["01", "--out", "{tmp}/full"], "is not empty"),
    "negative timeout": (["01", "--timeout", "-5"], "must be a positive number"),
    "missing registry": (["01", "--registry", "{tmp}/none.yaml"], "cannot read experiment registry"),
}


def test_a_parameter_some_notebooks_lack_is_named_on_stderr(sandbox_env, open_dir):
    """-p n=2 reaches 01 (declares n); 03 has no `n`: the run goes on and stderr says 03 ignores it."""
    env, _ = sandbox_env
    out = open_dir / "run"
    r = kit(env, "run", "--registry", str(REG), "01", "03", "-p", "n=2", "-p", "03:seconds=0", "--out", str(out),
            "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    notes = [line for line in r.stderr.splitlines() if line.startswith("note: -p n ")]
    assert notes == ["note: -p n is ignored by 03-sleeps: no such parameter there "
                     "(use -p ID:n=... to aim it at one experiment)"], r.stderr
    assert json.loads((out / "01-ok" / "results.json").read_text())["records"]["squares"] == [0, 1]
    assert "n" not in nbformat.read(out / "03-sleeps" / "sleeps.ipynb", as_version=4).metadata.papermill.parameters


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_exits_2_and_leaves_nothing(sandbox_env, tmp_path, case):
    env, dirs = sandbox_env
    args, message = BAD[case]
    (tmp_path / "afile").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    reg = [] if "--registry" in args else ["--registry", str(REG)]
    r = kit(env, "run", *reg, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("error:") == 1 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not dirs["runs"].exists()
    assert _left_behind(dirs) == []
    assert (tmp_path / "full" / "keep").exists()


def test_argparse_usage_errors_exit_2(sandbox_env):
    env, _ = sandbox_env
    r = kit(env, "run", "--timeout", "soon")
    assert r.returncode == 2 and "not a number of seconds" in r.stderr


def test_explicit_requirement_errors_name_the_fix(monkeypatch):
    reg = load_registry(REG)
    from k3snb.experiments import _registry

    monkeypatch.setattr(_registry, "_has", lambda cap, runsc: cap != "root")
    with pytest.raises(NotRoot, match="experiment 06-needs-root needs root"):
        reg["06"].check_explicit()
    monkeypatch.setattr(_registry, "_has", lambda cap, runsc: cap != "runsc")
    with pytest.raises(RunscMissing):
        reg["05"].check_explicit()


@pytest.mark.root
def test_not_root_exits_2_when_root_experiment_named(sandbox_env, tmp_path):
    """Run the CLI as `nobody`: naming a root-only experiment is a usage error, not a skip."""
    env, dirs = sandbox_env
    setpriv = shutil.which("setpriv")
    drop = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"] if setpriv else None
    if drop is None or subprocess.run([*drop, sys.executable, "-c", "import k3snb"], env=env,
                                      capture_output=True).returncode != 0:
        pytest.skip("the kit's Python is not usable by nobody here (venv under a private home)")
    for d in dirs.values():
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o777)
    r = subprocess.run([*drop, sys.executable, "-m", "k3snb", "run", "--registry", str(REG), "06"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "needs root" in r.stderr, r.stderr
    assert list(dirs["runs"].iterdir()) == []


@pytest.mark.slow
def test_kill9_of_a_run_stops_its_kernel_and_doctor_clean_leaves_nothing(sandbox_env, tmp_path):
    env, dirs = sandbox_env
    marker = tmp_path / "marker"
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "k3snb", "run", "--registry", str(REG), "03", "--out", str(out),
                          "-p", "seconds=600", "-p", f"marker={marker}"],
                         env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pids = [int(x) for x in _wait_for(marker).split()]  # kernel pid, its `sleep` child
        p.kill()  # kill -9: no handler, no finally in the run itself
        p.wait(30)
        deadline = time.monotonic() + 5  # the worker gets SIGTERM from the kernel (PR_SET_PDEATHSIG)
        while (_alive(pids) or _processes_of_run(out)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(pids) == [] and _processes_of_run(out) == []
        assert len(list(dirs["state"].iterdir())) == 1  # the dead run's record: doctor's to clean
        r = kit(env, "doctor", "--clean")
        assert r.returncode == 0, r.stderr
    finally:
        if p.poll() is None:
            p.kill()
    assert not (out / _execute.KIT_DIR).exists()
    assert list(dirs["state"].iterdir()) == []


# -- faults: the run's death stops its work; full disk; timeout; concurrent --out -----------------


@pytest.fixture
def open_dir():
    """A 0755 folder under /tmp: runsc can't start a sandbox while $TMPDIR (the run's kit dir) lies inside a
    0700 folder such as pytest's tmp_path."""
    d = Path(tempfile.mkdtemp(prefix="k3snb-test-run-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _processes_of(*needles: str) -> list[str]:
    """Live processes whose environment or command line names one of ``needles`` (this test's own dirs)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            blob = Path(f"/proc/{pid}/environ").read_bytes() + Path(f"/proc/{pid}/cmdline").read_bytes()
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except OSError:
            continue
        if any(n.encode() in blob for n in needles):
            found.append(f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()[:120]!r}")
    return found


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.runsc
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
def test_killed_run_stops_its_sandbox_within_5s(sandbox_env, tmp_path, open_dir, sig):
    """Issue 12.1: kill -9 (or SIGHUP) of `k3snb run` mid-sandbox: 5 s later nothing of the run is running."""
    env, dirs = sandbox_env
    marker = tmp_path / "marker"
    out = open_dir / "run"
    p = subprocess.Popen([sys.executable, "-m", "k3snb", "run", "--registry", str(REG), "07", "01", "--out", str(out),
                          "-p", f"marker={marker}", "--no-progress"],
                         env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        facts = json.loads(_wait_for(marker, limit=120))
        pids = [facts["kernel"], *facts["sandbox"].values()]
        assert _alive(pids) == pids  # the sandbox (runsc, gofer, sentry) runs
        p.send_signal(sig)
        time.sleep(5)
        left = _processes_of(str(out), str(dirs["tmp"]))
        assert _alive(pids) == [] and left == [], left
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    rows = {r["id"]: r for r in json.loads((out / "summary.json").read_text())["rows"]}
    assert rows["07-sandbox"]["status"] == "failed"
    assert rows["01-ok"]["status"] == "skipped" and rows["01-ok"]["reason"] == _execute.NOT_RUN
    assert not list((out / "07-sandbox").glob(".*")), "status files left in the cell folder"
    if sig == signal.SIGHUP:  # handled like SIGTERM: the run cleaned up itself
        assert p.returncode == 130
        assert rows["07-sandbox"]["reason"] == "interrupted"
        assert list(dirs["state"].iterdir()) == [] and not (out / _execute.KIT_DIR).exists()
    else:  # the worker saw its parent die and wrote the row; the reaper takes the rest
        assert "the run died" in rows["07-sandbox"]["reason"]
        r = kit(env, "doctor", "--clean")
        assert r.returncode == 0, r.stderr
        assert list(dirs["state"].iterdir()) == [] and not (out / _execute.KIT_DIR).exists()
    assert list(dirs["tmp"].iterdir()) == []


@pytest.mark.slow
@pytest.mark.root
def test_full_disk_is_reported_once_and_the_summary_stays_valid(tmp_path):
    """Issue 12.5: the run folder on a 3 MiB tmpfs (private mount namespace) fills up mid-run."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    mnt, state, tmp = tmp_path / "mnt", tmp_path / "state", tmp_path / "tmp"
    for d in (mnt, state, tmp):
        d.mkdir()
    script = (f"mount -t tmpfs -o size=3m k3snb-test {mnt} && "
              f"{sys.executable} -m k3snb run --registry {REG} 01 09 03 --out {mnt}/run --no-progress "
              f"> {tmp_path}/stdout 2> {tmp_path}/stderr; echo $? > {tmp_path}/rc; "
              # the tmpfs vanishes with this namespace: look at it from inside
              f"find {mnt} -name '*.tmp' -o -name '.k3snb-*' > {tmp_path}/leftovers; "
              f"cp {mnt}/run/summary.json {tmp_path}/summary.json")
    env = {**os.environ, "K3SNB_STATE": str(state), "K3SNB_TMP": str(tmp)}
    subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env, timeout=300, check=True)
    stderr = (tmp_path / "stderr").read_text()
    assert (tmp_path / "rc").read_text().strip() == "1"
    assert stderr.count("error:") == 1 and "No space left on device" in stderr and "Traceback" not in stderr, stderr
    rows = {r["id"]: r for r in json.loads((tmp_path / "summary.json").read_text())["rows"]}
    assert list(rows) == ["01-ok", "09-fills-disk", "03-sleeps"]  # every experiment accounted for
    assert rows["01-ok"]["status"] == "passed"
    assert rows["09-fills-disk"]["status"] == "failed" and "filled up" in rows["09-fills-disk"]["reason"]
    assert rows["03-sleeps"] == {**rows["03-sleeps"], "status": "skipped", "reason": "not run: the run folder filled up"}
    assert (tmp_path / "leftovers").read_text() == ""  # no temp file, reserve or kit dir left
    assert list(state.iterdir()) == [] and list(tmp.iterdir()) == []


def test_writability_check_writes_real_bytes(tmp_path):
    """An empty probe file fits on a full filesystem; the check must fail where data can't be written."""
    from k3snb.experiments import _files

    _files.check_writable(tmp_path, "--out x")
    assert list(tmp_path.iterdir()) == []
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return
    probe = (f"mount -t tmpfs -o size=64k t {tmp_path} && dd if=/dev/zero of={tmp_path}/fill bs=4k 2>/dev/null; "
             f"{sys.executable} -c 'from pathlib import Path; from k3snb.experiments import _files; "
             f"_files.check_writable(Path(\"{tmp_path}\"), \"--out x\")'")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", probe], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "is not writable: No space left on device" in r.stderr, r.stderr


@pytest.mark.slow
def test_two_runs_racing_for_one_out_folder_exactly_one_wins(sandbox_env, tmp_path):
    """Issue 12.6: of two runs given the same new --out, one runs and the other gets a clear error (10 trials)."""
    env, dirs = sandbox_env
    for trial in range(10):
        out = tmp_path / f"run{trial}"
        argv = [sys.executable, "-m", "k3snb", "run", "--registry", str(REG), "04", "--out", str(out), "--no-progress"]
        procs = [subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(120), p.stderr.read()) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
        codes = sorted(rc for rc, _ in results)
        assert codes == [0, 2], results
        loser = next(err for rc, err in results if rc == 2)
        assert loser.count("error:") == 1 and "is not empty" in loser, loser
        assert json.loads((out / "summary.json").read_text())["rows"][0]["id"] == "04-needs-program"
    assert _left_behind(dirs) == []


# -- run options honoured (issue 9) and sweeps (issue 13) ---------------------------------------


HONOUR = {
    "--runsc, notebook without runner": (["01", "03", "--runsc", "2022"], "03-sleeps cannot honour --runsc"),
    "--runner, two without runner": (["01", "02", "03", "--runner", "host"], "02-broken, 03-sleeps cannot honour --runner"),
    "--matrix platform": (["02", "-m", "platform=ptrace"], "02-broken cannot honour --matrix platform"),
    "runner kind not supported": (["02", "--runner", "gvisor"], "02-broken cannot honour --runner"),
    "host with --runsc": (["01", "--runner", "host", "--runsc", "2022"], "do not apply to the host runner"),
    "bad spec": (["01", "--runner", "gvisor:1999"], "unknown runsc build '1999'"),
    "unknown axis": (["01", "-m", "nosuch=1,2"], "unknown matrix axis 'nosuch'"),
    "malformed axis": (["01", "-m", "runsc"], "malformed matrix axis 'runsc'"),
    "repeated value": (["01", "-m", "n=1,1"], "repeats a value"),
    "bad list value": (["01", "-p", "n=[1,"], "malformed list/dict value"),
    "workers with scheduler": (["01", "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"], "--workers is for cells"),
    "no scheduler there": (["01", "--scheduler", "tcp://127.0.0.1:9"], "no Dask scheduler at tcp://127.0.0.1:9"),
    "bad scheduler": (["01", "--scheduler", "127.0.0.1:9"], "malformed scheduler address"),
    "wrong type": (["01", "-p", "n=[1, 2]"], "parameter 'n' of 01-ok is a int"),
}


@pytest.mark.parametrize("case", HONOUR, ids=list(HONOUR))
def test_run_options_are_honoured_or_refused_with_exit_2(sandbox_env, tmp_path, case):
    """Issue 9: --runner/--runsc/--matrix never silently ignored: exit 2 naming who can't honour it."""
    env, dirs = sandbox_env
    args, message = HONOUR[case]
    r = kit(env, "run", "--registry", str(REG), *args, "--out", str(tmp_path / "run"))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("error:") == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists() and _left_behind(dirs) == []


def test_matrix_expands_into_cells_with_axes():
    from k3snb.experiments._plan import build_platforms, plan

    cells = plan(["10"], {"seconds": 0}, registry=REG, matrix={"runsc": ["2022", "2024"],
                                                              "platform": ["systrap", "ptrace"]}, repeat=2)
    assert [c.name for c in cells] == [f"10-env-{b}-{p}-r{i}" for b in ("2022", "2024")
                                       for p in ("systrap", "ptrace") for i in (1, 2)]
    c = cells[2]
    assert c.runner == "gvisor:2022:ptrace" and c.params == {"runner": "gvisor:2022:ptrace", "seconds": 0}
    assert c.axes == {"runsc": "2022", "platform": "ptrace", "repeat": 1}
    if "2022" in (cells[0].skip or "") or not build_platforms("2022"):
        return  # no 2022 build here: its cells are skipped for that reason
    assert cells[0].skip == "platform systrap not available with runsc 2022"  # runsc's own flag list says so
    assert cells[2].skip is None
    one = plan(["10"], registry=REG, runsc="2022")  # a one-value axis is a column, not part of the name
    assert [(c.name, c.runner, c.axes) for c in one] == [("10-env", "gvisor:2022", {"runsc": "2022"})]
    labels = plan(["10"], registry=REG, matrix={"label": ["x", "y"]})
    assert [(c.name, c.params["label"]) for c in labels] == [("10-env-label=x", "x"), ("10-env-label=y", "y")]


def test_list_values_and_parameter_types():
    from k3snb.experiments._params import parameters_of_source

    assert _execute.parse_params(['configs=["default", "ultimate"]', "d={'a': 1}"]) == {
        "configs": ["default", "ultimate"], "d": {"a": 1}}
    params = parameters_of_source('n = 3  # how many\n# the spec\nrunner = "gvisor"\nxs: list[str] = []\nf = 2.5\n'
                                  "flag = True\nnothing = None\nexpr = 2 * n\n")
    assert {k: (p.type, p.default, p.help) for k, p in params.items()} == {
        "n": ("int", "3", "how many"), "runner": ("str", '"gvisor"', "the spec"), "xs": ("list[str]", "[]", ""),
        "f": ("float", "2.5", ""), "flag": ("bool", "True", ""), "nothing": ("None", "None", ""),
        "expr": ("expression", "2 * n", "")}


def test_experiments_command_shows_parameters_with_types(sandbox_env):
    """Issue 9: `k3snb experiments ID` lists name, type, default and help (no 'Unable to parse', no 'Unknown')."""
    env, _ = sandbox_env
    r = kit(env, "experiments", "--registry", str(REG), "03", "10")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.split()[:3] == ["seconds", "int", "1"] and "(registry)" in line for line in lines), r.stdout
    assert any(line.split()[:3] == ["runner", "str", '"gvisor"'] and "runner spec" in line for line in lines)
    assert "Unknown" not in r.stdout and "Unable to parse" not in r.stdout + r.stderr
    r = kit(env, "experiments", "91", "--json")
    doc = json.loads(r.stdout)
    types = {p["name"]: p["type"] for p in doc[0]["parameters"]}
    assert types["configs"] == "list" and types["sandboxes_per_config"] == "int"


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.runsc2024
def test_runner_spec_reaches_the_notebook_and_results_record_what_ran(sandbox_env, open_dir):
    """Issue 9: --runner gvisor:2024:ptrace starts that sandbox; results.json names runner, runsc version, platform.

    The notebook starts a host runner first (a context probe, as notebook 00 does): ``runner_used`` is still the
    cell's gVisor runner, all of its facts from that one runner, and the row carries the local machine columns."""
    env, dirs = sandbox_env
    out = open_dir / "run"
    r = kit(env, "run", "--registry", str(REG), "10", "--runner", "gvisor:2024:ptrace", "-p", "sandbox=True",
            "-p", "host_first=True", "-p", "seconds=0", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((out / "10-env" / "results.json").read_text())
    assert res["records"]["runner"] == "gvisor:2024:ptrace" and res["records"]["uname"] == "4.4.0"
    assert res["records"]["host_uname"] == os.uname().release
    host, sandbox = res["runners_used"]  # in the order the notebook started them
    assert host["kind"] == "host" and "runsc_version" not in host
    assert sandbox["kind"] == "gvisor" and sandbox["platform"] == "ptrace"  # the started sandbox said so
    used = res["runner_used"]
    assert used == {**sandbox, "source": "runner", "spec": "gvisor:2024:ptrace"}  # one runner, not host + spec mixed
    assert used["label"] == "gvisor-2024" and "20240729" in used["runsc_version"]
    assert not (out / "10-env" / ".runners.jsonl").exists()
    (row,) = json.loads((out / "summary.json").read_text())["rows"]
    assert row["runner"] == "gvisor:2024:ptrace" and "20240729" in row["runsc_version"]
    assert row["platform_used"] == "ptrace"
    # the same columns a Dask row has (_dask._bring_home), filled with this machine's facts
    from k3snb.experiments._record import environment_facts

    here = environment_facts()
    assert row["host"] == here["hostname"] and row["host_kernel"] == os.uname().release
    assert row["runsc_builds"] == ", ".join(f"{k}={v}" for k, v in here["runsc"].items())
    assert "2024=0.0~20240729" in row["runsc_builds"] and row["worker"] == "local"
    header = (out / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"host", "host_kernel", "runsc_builds", "worker", "runsc_version", "platform_used"} <= set(header)


@pytest.mark.slow
def test_a_wheel_ships_the_registry_and_its_notebooks(tmp_path):
    """Issue 10: the registry finds its notebooks through the installed package, not a checkout path."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        target = src / f.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / f.decode()).is_symlink():
            target.symlink_to(os.readlink(ROOT / f.decode()))
        elif (ROOT / f.decode()).is_file():
            shutil.copyfile(ROOT / f.decode(), target)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheel"),
                        str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = (tmp_path / "wheel").glob("*.whl")
    import zipfile

    site = tmp_path / "site"
    zipfile.ZipFile(whl).extractall(site)
    check = ("import k3snb, json; from k3snb.experiments import load_registry; "
             "print(json.dumps([k3snb.__file__] + [str(e.path) for e in load_registry().entries if e.path.is_file()]))")
    out = subprocess.run([sys.executable, "-c", check], env={**os.environ, "PYTHONPATH": str(site)}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    init, *found = json.loads(out.stdout)
    assert init == str(site / "k3snb" / "__init__.py")
    shipped = sorted(e.notebook for e in load_registry().entries if (src / "notebooks" / e.notebook).is_file())
    assert shipped and sorted(Path(p).name for p in found) == shipped
    assert all(Path(p).parent == site / "k3snb" / "notebooks" for p in found)
