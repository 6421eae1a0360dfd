"""Verdicts that name their environments land in those columns of the findings report, end to end: a real
`run_experiments` of a fixture notebook (tests/notebooks/report-envs/) under the host runner whose verdicts,
from the real k3snb.studies.runtime functions, speak for gVisor builds (as notebook 25's do)."""

from __future__ import annotations

import json
from pathlib import Path

import k3snb

REG = Path(__file__).parent / "notebooks" / "report-envs" / "experiments.yaml"


def test_verdicts_land_in_the_environments_they_name(tmp_path, monkeypatch):
    monkeypatch.setenv("K3SNB_REGISTRY", str(REG))  # the kernel's studies.conclude reads the fixture registry
    run = k3snb.run_experiments(["01"], runners=["host"], out=tmp_path / "run", progress=False)
    assert run.exit_code == 0, run.table()
    res = json.loads(next((tmp_path / "run").glob("*/results.json")).read_text())
    stored = {v["claim"]: v for v in res["verdicts"]}
    assert stored["Exp 25"]["environments"] == ["gvisor-2022", "gvisor-2024"]
    assert stored["addendum 2: runc cgroups"]["environments"] == ["gvisor-2024"]

    rep = k3snb.make_report(tmp_path / "run", export=False)
    # the cell ran under the host runner, yet no verdict is about the host (its rows are context)
    assert rep.environments == ["gvisor-2022", "gvisor-2024"]
    assert [c.status for c in rep.cell("Exp 25", "gvisor-2022")] == ["reproduced"]
    assert [c.status for c in rep.cell("Exp 25", "gvisor-2024")] == ["reproduced"]
    assert [c.status for c in rep.cell("C2", "gvisor-2022")] == ["inconclusive"]  # the builds disagree
    assert [c.status for c in rep.cell("C2", "gvisor-2024")] == ["inconclusive"]
    assert [c.status for c in rep.cell("addendum 2: runc cgroups", "gvisor-2024")] == ["reproduced"]
    assert rep.cell("addendum 2: runc cgroups", "gvisor-2022") == []
    assert not [c for c in rep.cells if c.env == "host"]
    frame = rep.to_frame().set_index("claim")
    assert frame.loc["addendum 2: runc cgroups"].to_dict() == {"gVisor 2022": "", "gVisor 2024": "reproduced"}
    md = tmp_path / "report.md"
    rep.write(md)
    assert "gVisor 2024" in md.read_text() and "| host" not in md.read_text()
