"""Stability trials (k3snb.runners.stability): real counts from real sandboxes, a killed sandbox is a
death with crash text, and the claim checks of notebook 91 judge only what was recorded."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from helpers import RUNSC, procs_with

import k3snb
from k3snb.errors import InvalidParameter
from k3snb.runners.stability import (
    StabilityResult,
    Trial,
    combine,
    load_study,
    resolve_config,
    stability_trial,
    upper_bound,
    workload_argv,
)

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "data" / "benchmarks" / "runsc-2024-stability.json"


# -- pure parts ---------------------------------------------------------------------------------


def test_upper_bound_is_the_exact_one_sided_bound():
    assert upper_bound(0, 0) is None
    assert upper_bound(0, 1) == pytest.approx(0.95)
    assert upper_bound(0, 238) == pytest.approx(1 - 0.05 ** (1 / 238))
    assert 2.9 / 238 < upper_bound(0, 238) < 3.0 / 238  # the rule of three
    assert upper_bound(4, 5) == pytest.approx(0.9898, abs=1e-4)  # Clopper-Pearson, 4 of 5
    assert upper_bound(5, 5) == 1.0


def test_configurations_resolve_by_name_or_flags():
    assert resolve_config("default") == ("default", {})
    assert resolve_config("--directfs=false") == ("directfs=false", {"runsc_flags": ["--directfs=false"]})
    # shared file access needs the rootfs overlay off in runsc 2024
    assert resolve_config("--file-access=shared")[1] == {"runsc_flags": ["--file-access=shared", "--overlay2=none"]}
    assert resolve_config("--platform=ptrace") == ("platform=ptrace", {"platform": "ptrace"})
    assert resolve_config("--overlay2=none --debug")[1] == {"runsc_flags": ["--overlay2=none"], "debug": True}
    with pytest.raises(InvalidParameter):
        resolve_config("fast")
    with pytest.raises(InvalidParameter):
        workload_argv("ls /")


def test_stored_study_loads_with_its_counts():
    s = load_study(STUDY)
    assert (s.sandboxes, s.deaths, s.failed_creates, s.execs) == (1148, 0, 0, 10332)
    f = s.to_frame().set_index("config")
    assert f.loc["default", "sandboxes"] == 238 and f.loc["raw-detach", "sandboxes"] == 138
    assert "control-2022" not in f.index and "control-2022" in load_study(STUDY, control=True).trials


def _result(deaths: dict[str, int], n: int, crash: str = "panic: x\ngofer.(*handle).readToBlocksAt") -> StabilityResult:
    trials = {c: [Trial(c, created=True, died=i < deaths.get(c, 0), execs_ok=9,
                        crash=crash if i < deaths.get(c, 0) else None) for i in range(n)]
              for c in ("default", "directfs=false", "file-access=shared")}
    return StabilityResult(trials, runsc_version="0.0~20240729.0")


def test_combine_pools_one_configuration_over_results():
    # (the verdicts on the notes' claims are k3snb.studies.sandbox_deaths, tests/test_studies.py)
    assert combine([_result({}, 2), _result({"default": 1}, 3)]).to_frame().set_index("config").loc[
        "default", ["sandboxes", "deaths"]].tolist() == [5, 1]


# -- real sandboxes -----------------------------------------------------------------------------


def _ours() -> list[int]:
    """runsc processes of this test session (their paths are under the session's temp root)."""
    return procs_with(str(k3snb._paths.tmp_root()), RUNSC)


@pytest.mark.root
@pytest.mark.runsc2024
def test_one_config_two_sandboxes_real_counts():
    r = stability_trial(["default"], 2, "light", "2024")
    (trials,) = r.trials.values()
    assert r.runsc_version == "0.0~20240729.0" and r.runsc_version_text.startswith("runsc version 0.0~20240729")
    assert len(trials) == 2 and r.sandboxes == 2 and r.failed_creates == 0 and r.execs > 0
    for t in trials:  # a death is exactly a RunResult with sandbox_died
        assert t.created and t.last is not None and t.died == t.last.sandbox_died
        if not t.died:
            assert t.execs_ok + t.failed_execs == 3 * 3 and t.crash is None
    assert r.deaths == sum(t.last.sandbox_died for t in trials)
    row = r.to_frame().iloc[0]
    assert (row.config, row.sandboxes, row.deaths, row.execs) == ("default", 2, r.deaths, r.execs)
    assert not _ours()  # every sandbox closed


@pytest.mark.root
@pytest.mark.runsc2024
def test_sandbox_killed_mid_trial_is_a_death_with_crash_text():
    killed: list[int] = []
    stop = threading.Event()

    def killer():
        # wait for the sandbox and for an exec of the workload in it, then SIGKILL runsc-sandbox
        while not stop.is_set():
            procs = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in _ours() if Path(f"/proc/{p}").exists()}
            sandbox = [p for p, c in procs.items() if c.startswith(b"runsc-sandbox")]
            execing = [p for p, c in procs.items() if b"\0exec\0" in c and b"\0sleep\0" in c]
            if sandbox and execing:
                os.kill(sandbox[0], signal.SIGKILL)
                killed.append(sandbox[0])
                return
            time.sleep(0.05)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    try:
        t0 = time.monotonic()
        r = stability_trial(["default"], 1, [["sleep", "5"]], "2024", rounds=3)
    finally:
        stop.set()
        th.join(10)
    assert killed, "the sandbox was never seen running an exec"
    (t,) = r.trials["default"]
    assert t.created and t.died and t.died_at_exec == 1 and t.execs_ok == 0
    assert t.last.sandbox_died and t.crash and t.crash_head and t.crash == t.last.crash[:6000]
    assert r.deaths == 1 and r.to_frame().iloc[0].deaths == 1
    assert time.monotonic() - t0 < 5 * 3  # the death ended the trial; it did not wait out the workload
    assert not _ours()
