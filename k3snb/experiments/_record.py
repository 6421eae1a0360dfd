"""``record()`` and ``verdict()``: what a notebook found, stored where the run can read it back.

Inside ``run_experiments`` every kernel gets ``$K3SNB_RESULTS`` naming one JSON file per experiment;
in an interactive session the values stay in memory (:func:`results`). The first write also stores
environment facts (kit, Python, kernel, runsc builds, k3s version) so every verdict carries the
context it was reached in.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter
from ..report import Rich, render

STATUSES = ("reproduced", "refuted", "not-testable", "inconclusive")
_LOCK = threading.Lock()
_MEMORY: dict[str, Any] = {}


def _results_file() -> Path | None:
    env = os.environ.get("K3SNB_RESULTS")
    return Path(env) if env else None


def _load() -> dict[str, Any]:
    f = _results_file()
    if f is None:
        return _MEMORY
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return {}


def _save(doc: dict[str, Any]) -> None:
    f = _results_file()
    if f is None:
        return  # _MEMORY was modified in place
    from ._files import write_atomic

    write_atomic(f, json.dumps(doc, indent=1, allow_nan=False))


def jsonable(value: Any) -> Any:
    """Convert ``value`` to plain JSON types: DataFrames become records, Rich results their ``to_dict()``.

    Raises:
        InvalidParameter: the value has no JSON form (name the type, suggest a conversion).
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    mod = type(value).__module__.split(".")[0]
    if mod == "pandas":
        if hasattr(value, "to_json"):
            orient = "records" if hasattr(value, "columns") else "index"
            return json.loads(value.to_json(orient=orient, date_format="iso", default_handler=str))
        return str(value)  # Timestamp, Timedelta, NA
    if mod == "numpy":
        return jsonable(value.tolist() if hasattr(value, "tolist") else value.item())
    if isinstance(value, Rich) or (hasattr(value, "to_dict") and callable(value.to_dict)):
        return jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset) and not isinstance(value, bytes | bytearray):
        return [jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    raise InvalidParameter(
        f"cannot record a value of type {type(value).__name__}",
        hint="record a str, number, list, dict, DataFrame or a kit result (anything with to_dict())",
    )


def environment_facts() -> dict[str, Any]:
    """Facts recorded with every result: kit and Python versions, kernel, date, runsc builds, k3s."""
    from .. import __version__

    facts: dict[str, Any] = {
        "kit_version": __version__,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "hostname": platform.node(),
        "uid": os.geteuid(),
    }
    try:
        from ..runners.runsc import list_runsc_builds

        facts["runsc"] = {r["build"]: r["version"] for r in list_runsc_builds().rows if r["available"]}
    except Exception as e:  # the fact is "unknown", never a failed experiment
        facts["runsc"] = f"unknown ({type(e).__name__})"
    facts["k3s"] = _k3s_version()
    return facts


def _k3s_version() -> str | None:
    try:
        from ..k3s import find_k3s

        path = find_k3s()
    except Exception:
        return None
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=20).stdout
        return out.splitlines()[0].strip() if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _update(fn) -> None:
    with _LOCK:
        doc = _load()
        if "environment" not in doc:
            doc["environment"] = environment_facts()
        doc.setdefault("records", {})
        doc.setdefault("verdicts", [])
        fn(doc)
        _save(doc)


def record(key: str, value: Any) -> Any:
    """Store ``value`` under ``key`` in this run's results and return ``value`` unchanged.

    DataFrames are stored as a list of records, kit results through ``to_dict()``.

    Raises:
        InvalidParameter: empty key, or a value with no JSON form.
    """
    if not isinstance(key, str) or not key:
        raise InvalidParameter(f"record key must be a non-empty string, got {key!r}")
    data = jsonable(value)

    def put(doc):
        doc["records"][key] = data

    _update(put)
    return value


def note_runner(info: Mapping[str, Any]) -> None:
    """Record a runner this experiment actually started (runners call it; no-op outside ``k3snb run``)."""
    if _results_file() is None:
        return
    keep = ("kind", "label", "runsc", "runsc_version", "platform", "flags")
    entry = {k: jsonable(info[k]) for k in keep if k in info}

    def put(doc):
        used = doc.setdefault("runners_used", [])
        if entry not in used:
            used.append(entry)

    _update(put)


def results() -> dict[str, Any]:
    """What has been recorded so far: ``{"environment", "records", "verdicts", ...}``."""
    with _LOCK:
        return json.loads(json.dumps(_load()))


def reset() -> None:
    """Forget in-memory results (interactive sessions; a run's file is never touched)."""
    with _LOCK:
        _MEMORY.clear()


@dataclass(repr=False)
class Verdict(Rich):
    """The conclusion of one experiment about one claim, with the recorded evidence it rests on."""

    claim: str
    status: str
    evidence: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    experiment: str | None = None
    environments: list[str] | None = None  # where it holds: host | gvisor-2024 | runner specs; None = the run's runner

    _title_text = "verdict"
    _MARK = {"reproduced": "✔", "refuted": "✘", "not-testable": "∅", "inconclusive": "?"}

    def summary(self) -> dict[str, Any]:
        return {"claim": self.claim, "status": self.status, "reason": self.reason}

    def to_frame(self):
        import pandas as pd

        rows = [{"key": k, "value": _short(v)} for k, v in self.evidence.items()]
        return pd.DataFrame(rows, columns=["key", "value"])

    def to_dict(self) -> dict[str, Any]:
        d = {"claim": self.claim, "status": self.status, "reason": self.reason,
             "evidence": self.evidence, "experiment": self.experiment}
        if self.environments is not None:  # the report files the verdict under these columns
            d["environments"] = list(self.environments)
        return d

    def _repr_text(self) -> str:
        keys = ", ".join(self.evidence) or "none"
        return f"<Verdict {self.claim}: {self._MARK[self.status]} {self.status} — {self.reason} [evidence: {keys}]>"

    def _repr_html_(self) -> str:
        return render(f"{self._MARK[self.status]} {self.claim}: {self.status}", self.summary(),
                      [("evidence", self.to_frame())], text=self._repr_text())


def _short(v: Any, n: int = 120) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= n else s[: n - 1] + "…"


def verdict(
    claim: str,
    status: str,
    evidence: Mapping[str, Any] | Sequence[str] | None = None,
    reason: str = "",
    environments: Sequence[str] | None = None,
) -> Verdict:
    """Conclude about ``claim`` (a seed-catalog id such as ``"C4"`` or ``"Exp 05"``) and persist it.

    Args:
        claim: what is being judged.
        status: ``reproduced``, ``refuted``, ``not-testable`` or ``inconclusive``.
        evidence: ``{key: value}`` (each pair is recorded too) or a list of keys already recorded.
        reason: one sentence; required for ``not-testable`` (say why).
        environments: the environments the verdict speaks for, as labels (``host``, ``gvisor-2024``) or
            runner specs (``gvisor:2024``) — for a notebook that opens several runners itself; None: the
            run's own runner.

    Raises:
        InvalidParameter: unknown status; a reproduced/refuted verdict without evidence; evidence
            naming a key that was never recorded; ``not-testable`` without a reason; ``environments``
            not a list of non-empty strings.
    """
    if status not in STATUSES:
        raise InvalidParameter(f"unknown verdict status {status!r}; valid: {', '.join(STATUSES)}")
    if not isinstance(claim, str) or not claim:
        raise InvalidParameter(f"claim must be a non-empty string, got {claim!r}")
    if status == "not-testable" and not reason:
        raise InvalidParameter("a not-testable verdict needs a reason (why it cannot be tested here)")
    if evidence is None:
        evidence = {}
    if isinstance(evidence, Mapping):
        ev = {str(k): jsonable(v) for k, v in evidence.items()}
    elif isinstance(evidence, Sequence) and not isinstance(evidence, str):
        recorded = results().get("records", {})
        unknown = [k for k in evidence if k not in recorded]
        if unknown:
            raise InvalidParameter(f"evidence names keys that were never recorded: {unknown}",
                                   hint="record(key, value) them first, or pass {key: value}")
        ev = {k: recorded[k] for k in evidence}
    else:
        raise InvalidParameter("evidence must be a mapping {key: value} or a list of recorded keys")
    if status in ("reproduced", "refuted") and not ev:
        raise InvalidParameter(f"a {status} verdict needs evidence", hint="pass evidence={key: value}")

    if environments is not None and (isinstance(environments, str) or not isinstance(environments, Sequence)
                                     or not all(isinstance(e, str) and e for e in environments)):
        raise InvalidParameter(f"environments must be a list of environment names, got {environments!r}",
                               hint='e.g. environments=["gvisor-2022", "gvisor-2024"] (or runner specs)')
    envs = list(dict.fromkeys(environments)) if environments is not None else None
    v = Verdict(claim, status, ev, reason, experiment=os.environ.get("K3SNB_EXPERIMENT"), environments=envs)

    def put(doc):
        doc["records"].update(ev)
        doc["verdicts"] = [x for x in doc["verdicts"] if x.get("claim") != claim] + [v.to_dict()]

    _update(put)
    return v
