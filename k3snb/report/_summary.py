"""The summary of one ``run_experiments`` batch: a status row per experiment, written as CSV/JSON
next to the executed notebooks, with the findings report (``report.html``), and shown as a Rich result."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._html import Rich, render


def _write_atomic(path: Path, data: str) -> None:
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(data)
    os.replace(tmp, path)


VERDICTS = ("reproduced", "refuted", "not-testable", "inconclusive")
COLUMNS = ["id", "runner", "status", "reason", "duration_s", *VERDICTS, "notebook", "results", "log"]


@dataclass(repr=False)
class RunSummary(Rich):
    """Rows of ``{id, runner, status (passed|failed|skipped), reason, duration_s, <verdict counts>, paths}``."""

    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    kit: dict[str, Any] = field(default_factory=dict)

    _title_text = "experiment run"

    def __post_init__(self) -> None:
        if not self.kit:  # the checkout the run started from: its report names the commit
            from .. import __version__
            from ._runs import git_facts

            self.kit = {"version": __version__, "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                        **git_facts()}

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

        return pd.DataFrame(self.rows, columns=self.columns())

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "interrupted": self.interrupted, "counts": self.counts(),
                "kit": self.kit, "rows": self.rows}

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report.html"

    def columns(self) -> list[str]:
        """COLUMNS, then any extra keys the rows carry (sweep axes, per-cell facts) in first-seen order."""
        extra = dict.fromkeys(k for r in self.rows for k in r if k not in COLUMNS)
        return [*COLUMNS, *extra]

    def write(self, report: bool = True) -> None:
        """Write ``summary.json``, ``summary.csv`` and the findings report ``report.html`` into the run folder.

        Each file is replaced whole (temp file + rename); an OSError (full disk) propagates. Called after
        every experiment, so a killed batch still leaves both; a report that cannot be built for any
        other reason is a warning on stderr, never a failed run.
        """
        import io

        try:  # the run folder's one atomic writer (helper C's); imported here: experiments imports this module
            from ..experiments._files import write_atomic
        except ImportError:  # pragma: no cover - until that module lands
            write_atomic = _write_atomic

        write_atomic(self.run_dir / "summary.json", json.dumps(self.to_dict(), indent=1, default=str))
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=self.columns(), extrasaction="ignore")
        w.writeheader()
        w.writerows(self.rows)
        write_atomic(self.run_dir / "summary.csv", buf.getvalue())
        if report:
            try:
                from ._report import make_report

                make_report(self.run_dir, self.report_path)
            except OSError:
                raise
            except Exception as e:  # the run's results are in summary.json whatever happens here
                print(f"warning: report.html not written: {type(e).__name__}: {e}", file=sys.stderr)

    @classmethod
    def read(cls, run_dir: str | Path) -> RunSummary:
        doc = json.loads((Path(run_dir) / "summary.json").read_text())
        return cls(Path(doc["run_dir"]), doc["rows"], doc.get("interrupted", False), doc.get("kit") or {"unknown": True})

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
