"""scripts/run-suite.sh on Ctrl-C: the SIGINT reaches the whole foreground process group (bash, the kit,
tee, the kernel), and the partial summary, the results: line and the report: line still reach the
terminal, because the script's tee ignores SIGINT. The script's run_and_report is called as the script
calls it (sourced, so the test does not re-run scripts/setup.sh), on a tiny fixture registry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REG = ROOT / "tests" / "notebooks" / "experiments.yaml"


def test_ctrl_c_still_shows_the_partial_summary_and_the_report_path(tmp_path):
    dirs = {n: tmp_path / n for n in ("state", "tmp", "home")}
    for d in dirs.values():
        d.mkdir()
    env = {**os.environ, "K3SNB_STATE": str(dirs["state"]), "K3SNB_TMP": str(dirs["tmp"]), "TMPDIR": str(dirs["tmp"]),
           "HOME": str(dirs["home"])}
    out, marker = tmp_path / "run", tmp_path / "marker"
    p = subprocess.Popen(
        ["bash", "-c", 'source scripts/run-suite.sh && run_and_report "$@"', "run-suite", "--registry", str(REG),
         "03", "01", "--out", str(out), "--no-progress", "-p", "03:seconds=600", "-p", f"03:marker={marker}"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)  # its own process group, as a terminal's foreground job
    try:
        deadline = time.monotonic() + 120
        while not (marker.is_file() and marker.read_text().strip()):  # 03's kernel sleeps now
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.2)
        os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C does: every process of the group gets it
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    assert p.returncode == 130, stderr
    lines = stdout.splitlines()
    assert any(ln.startswith("03-sleeps") and "interrupted" in ln for ln in lines), stdout  # the partial summary
    assert f"results: {out}" in lines, stdout
    assert "run-suite: interrupted; the summary above covers the experiments that ran" in lines, stdout
    assert lines[-1] == f"report: {out}/report.html" and (out / "report.html").is_file(), stdout
    rows = {r["id"]: r["reason"] for r in json.loads((out / "summary.json").read_text())["rows"]}
    assert rows["03-sleeps"] == "interrupted"
    assert [str(q) for d in dirs.values() for q in d.iterdir()] == []  # no tee log, record or kernel file left
