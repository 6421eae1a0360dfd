"""Stability data: the Trial and StabilityResult records, their statistics (upper_bound, summarize)
and storage (study_to_dict, load_study, combine)."""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter
from ..report import Rich, render
from .base import RunResult


@dataclass
class Trial:
    """One fresh sandbox: created or not, died or not, and what its commands did."""

    config: str
    created: bool = False
    died: bool = False
    execs_ok: int = 0
    failed_execs: int = 0
    seconds: float = 0.0
    create_error: str | None = None
    died_at_exec: int | None = None
    crash_head: str | None = None
    crash: str | None = None  # the whole crash text (panic line + stack head) of a death
    exec_stderr: str | None = None
    fail_example: str | None = None
    last: RunResult | None = field(default=None, repr=False)  # the result that ended the trial (not stored)

    def to_dict(self) -> dict[str, Any]:
        """The stored form (data/benchmarks/runsc-2024-stability.json): unset fields left out."""
        d = {"created": self.created, "died": self.died, "execs_ok": self.execs_ok,
             "failed_execs": self.failed_execs, "seconds": self.seconds}
        for k in ("create_error", "died_at_exec", "crash_head", "crash", "exec_stderr", "fail_example"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    @classmethod
    def from_dict(cls, config: str, d: Mapping[str, Any]) -> Trial:
        known = {k: d[k] for k in ("created", "died", "execs_ok", "failed_execs", "seconds", "create_error",
                                   "died_at_exec", "crash_head", "crash", "exec_stderr", "fail_example") if k in d}
        return cls(config=config, **known)


def upper_bound(deaths: int, n: int, confidence: float = 0.95) -> float | None:
    """One-sided exact (Clopper–Pearson) upper confidence bound on a rate seen ``deaths`` times in ``n``.

    For 0 deaths this is ``1 - (1 - confidence) ** (1 / n)``, about 3/n (the rule of three).
    """
    if n <= 0:
        return None
    if deaths >= n:
        return 1.0
    alpha = 1.0 - confidence
    if deaths == 0:
        return 1.0 - alpha ** (1.0 / n)

    def cdf(p: float) -> float:  # P(X <= deaths | n, p), decreasing in p
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(deaths + 1))

    lo, hi = deaths / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > alpha else (lo, mid)
    return hi


def summarize(trials: Sequence[Trial]) -> dict[str, Any]:
    """Counts of one configuration's trials (the ``summary`` entries of the stored study)."""
    created = [t for t in trials if t.created]
    died = [t for t in created if t.died]
    return {"trials": len(trials), "created": len(created), "create_failures": len(trials) - len(created),
            "died": len(died), "death_rate": round(len(died) / len(created), 3) if created else None,
            "execs_ok": sum(t.execs_ok for t in created), "failed_execs": sum(t.failed_execs for t in created),
            "median_trial_s": statistics.median(t.seconds for t in trials) if trials else None}


@dataclass(repr=False)
class StabilityResult(Rich):
    """Trials per configuration; ``to_frame()`` has one row per configuration with the 95 % upper bound."""

    trials: dict[str, list[Trial]]
    runsc: str = ""
    runsc_version: str = ""
    runsc_version_text: str = ""
    workload: list[str] = field(default_factory=list)
    rounds: int = 0
    parallel: int = 1
    wall_s: float = 0.0
    source: str = "this run"

    _title_text = "sandbox stability"

    def to_frame(self):
        import pandas as pd

        rows = []
        for config, ts in self.trials.items():
            s = summarize(ts)
            panics = [t.crash_head for t in ts if t.died and t.crash_head]
            ub = upper_bound(s["died"], s["created"])
            rows.append({
                "config": config, "sandboxes": s["created"], "deaths": s["died"],
                "failed_creates": s["create_failures"], "execs": s["execs_ok"], "failed_execs": s["failed_execs"],
                "death_rate": s["death_rate"], "upper95": None if ub is None else round(ub, 4),
                "median_trial_s": s["median_trial_s"],
                "panic": panics[0].splitlines()[0][:160] if panics else "",
            })
        return pd.DataFrame(rows, columns=["config", "sandboxes", "deaths", "failed_creates", "execs", "failed_execs",
                                           "death_rate", "upper95", "median_trial_s", "panic"])

    @property
    def sandboxes(self) -> int:
        return sum(t.created for ts in self.trials.values() for t in ts)

    @property
    def deaths(self) -> int:
        return sum(t.created and t.died for ts in self.trials.values() for t in ts)

    @property
    def failed_creates(self) -> int:
        return sum(not t.created for ts in self.trials.values() for t in ts)

    @property
    def execs(self) -> int:
        return sum(t.execs_ok for ts in self.trials.values() for t in ts)

    def panics(self) -> list[str]:
        """Every recorded crash excerpt (the panic head), in trial order."""
        return [t.crash_head for ts in self.trials.values() for t in ts if t.died and t.crash_head]

    def matching(self, pattern: str) -> int:
        """How many deaths have ``pattern`` (a regex) in their crash text, e.g. ``"readToBlocksAt"``."""
        rx = re.compile(pattern)
        return sum(bool(rx.search(t.crash or t.crash_head or "")) for ts in self.trials.values() for t in ts
                   if t.created and t.died)

    def summary(self) -> dict[str, Any]:
        ub = upper_bound(self.deaths, self.sandboxes)
        return {"source": self.source, "runsc_version": self.runsc_version, "configs": len(self.trials),
                "sandboxes": self.sandboxes, "deaths": self.deaths, "failed_creates": self.failed_creates,
                "execs": self.execs, "upper95_all": None if ub is None else round(ub, 4)}

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "rows": self.to_frame().to_dict(orient="records"),
                "runsc": self.runsc, "runsc_version_text": self.runsc_version_text, "workload": self.workload,
                "rounds": self.rounds, "parallel": self.parallel, "panics": self.panics()}

    def _repr_text(self) -> str:
        return (f"<StabilityResult {self.source}: runsc {self.runsc_version}, {len(self.trials)} configs, "
                f"{self.sandboxes} sandboxes, {self.deaths} died, {self.failed_creates} failed creates>")

    def _repr_html_(self) -> str:
        sections: list[tuple[str, Any]] = [("configurations", self.to_frame())]
        if self.panics():
            sections.append(("panic excerpts", "\n\n".join(self.panics()[:5])))
        return render(f"{self._title_text} ({self.source})", self.summary(), sections, text=self._repr_text())


def study_to_dict(res: StabilityResult) -> dict[str, Any]:
    """The stored form of one study run (one entry of ``runs`` in runsc-2024-stability.json)."""
    return {"runsc": res.runsc, "runsc_version": res.runsc_version, "workload": res.workload,
            "rounds": res.rounds, "parallel": res.parallel, "wall_s": res.wall_s,
            "summary": {c: summarize(ts) for c, ts in res.trials.items()},
            "trials": {c: [t.to_dict() for t in ts] for c, ts in res.trials.items()}}


# The large study of the checkout (benchmarks/bench_sandbox.py stability writes it).
STUDY_FILE = Path(__file__).resolve().parents[2] / "data" / "benchmarks" / "runsc-2024-stability.json"


def load_study(path: str | os.PathLike | None = None, *, control: bool = False) -> StabilityResult:
    """A stored study (all its runs) as one :class:`StabilityResult`, trials pooled per configuration.

    Args:
        path: the study JSON; None = :data:`STUDY_FILE` (data/benchmarks/ of the kit's checkout).
        control: include the 2022-build control trials, as configuration ``control-2022``.
    """
    path = Path(path) if path is not None else STUDY_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InvalidParameter(f"cannot read the stability study {path}: {e}",
                               hint="pass the path of a runsc-2024-stability.json, or run "
                                    "`python benchmarks/bench_sandbox.py stability`") from None
    runs = doc.get("runs", [doc])
    trials: dict[str, list[Trial]] = {}
    for run in runs:
        for config, ts in run.get("trials", {}).items():
            trials.setdefault(config, []).extend(Trial.from_dict(config, t) for t in ts)
        if control and run.get("control_2022_trials"):
            trials.setdefault("control-2022", []).extend(
                Trial.from_dict("control-2022", t) for t in run["control_2022_trials"])
    versions = sorted({r.get("runsc_version", "") for r in runs})
    workloads = [w for r in runs for w in (r.get("workload") or [])]
    return StabilityResult(trials, runsc=runs[0].get("runsc", "") if runs else "", runsc_version=", ".join(versions),
                           workload=sorted(set(workloads)), rounds=runs[0].get("rounds", 3) if runs else 0,
                           parallel=max((r.get("parallel", 1) for r in runs), default=1),
                           wall_s=round(sum(r.get("wall_s", 0) for r in runs), 1),
                           source=f"stored study {Path(path).name} ({len(runs)} runs)")


def combine(results: Sequence[StabilityResult], source: str = "pooled") -> StabilityResult:
    """Several results as one, trials pooled per configuration (versions joined when they differ)."""
    trials: dict[str, list[Trial]] = {}
    for r in results:
        for config, ts in r.trials.items():
            trials.setdefault(config, []).extend(ts)
    versions = sorted({r.runsc_version for r in results if r.runsc_version})
    return StabilityResult(trials, runsc=results[0].runsc if results else "", runsc_version=", ".join(versions),
                           workload=sorted({w for r in results for w in r.workload}),
                           rounds=max((r.rounds for r in results), default=0),
                           parallel=max((r.parallel for r in results), default=1),
                           wall_s=round(sum(r.wall_s for r in results), 1), source=source)
