"""The summary of one ``run_experiments`` batch: a status row per experiment, written as CSV/JSON
next to the executed notebooks and shown as a Rich result."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._html import Rich, render

VERDICTS = ("reproduced", "refuted", "not-testable", "inconclusive")
COLUMNS = ["id", "runner", "status", "reason", "duration_s", *VERDICTS, "notebook", "results", "log"]


@dataclass(repr=False)
class RunSummary(Rich):
    """Rows of ``{id, runner, status (passed|failed|skipped), reason, duration_s, <verdict counts>, paths}``."""

    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    _title_text = "experiment run"

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        out = {s: sum(1 for r in self.rows if r["status"] == s) for s in ("passed", "failed", "skipped")}
        for v in VERDICTS:
            out[v] = sum(int(r.get(v) or 0) for r in self.rows)
        return out

    def summary(self) -> dict[str, Any]:
        return {**self.counts(), "run": str(self.run_dir), **({"interrupted": True} if self.interrupted else {})}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=COLUMNS)

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "interrupted": self.interrupted, "counts": self.counts(),
                "rows": self.rows}

    def write(self) -> None:
        """Write ``summary.json``, ``summary.csv`` and ``summary.html`` into the run folder."""
        (self.run_dir / "summary.json").write_text(json.dumps(self.to_dict(), indent=1, default=str))
        (self.run_dir / "summary.html").write_text(
            f"<!doctype html><meta charset='utf-8'><title>k3snb run</title>{self._repr_html_()}")
        with open(self.run_dir / "summary.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    @classmethod
    def read(cls, run_dir: str | Path) -> RunSummary:
        doc = json.loads((Path(run_dir) / "summary.json").read_text())
        return cls(Path(doc["run_dir"]), doc["rows"], doc.get("interrupted", False))

    def table(self) -> str:
        """Plain-text table (the CLI prints it)."""
        head = f"{'experiment':28} {'runner':7} {'status':8} {'time':>7}  verdicts / reason"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            v = ", ".join(f"{r[k]} {k}" for k in VERDICTS if r.get(k))
            detail = "; ".join(x for x in (v, r.get("reason") or "") if x)
            dur = f"{r['duration_s']:.1f}s" if r.get("duration_s") is not None else "-"
            lines.append(f"{r['id']:28} {r.get('runner') or '-':7} {r['status']:8} {dur:>7}  {detail}")
        c = self.counts()
        lines.append(f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
                     + (" (interrupted)" if self.interrupted else "") + f" — results in {self.run_dir}")
        return "\n".join(lines)

    def _repr_text(self) -> str:
        c = self.counts()
        return (f"<RunSummary {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped; "
                f"{c['reproduced']} reproduced, {c['refuted']} refuted, {c['not-testable']} not-testable, "
                f"{c['inconclusive']} inconclusive — {self.run_dir}>")

    def _repr_html_(self) -> str:
        return render(self._title_text, self.summary(), [("experiments", self.to_frame())], text=self._repr_text())
