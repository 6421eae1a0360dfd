"""The claim type, the claim sentences (k3snb/data/claims.yaml) and the one verdict table a notebook ends with.

Every study function is pure: recorded evidence in, a :class:`~k3snb.experiments.Verdict` out (nothing is
written). :func:`conclude` is the only place a notebook persists verdicts: it checks that the verdicts cover
exactly the claims the registry lists for the experiment, records them with ``k3snb.verdict`` and returns a
:class:`VerdictTable` that renders all of them at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..errors import InvalidParameter
from ..experiments._record import STATUSES, Verdict, jsonable
from ..report import Rich, render

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Claim:
    """One claim of the research: its registry id, the sentence, where it is stated."""

    id: str
    text: str
    source: str = ""

    def __str__(self) -> str:
        return f"{self.id}: {self.text}"


@cache
def _load() -> dict[str, Claim]:
    import yaml

    doc = yaml.safe_load(resources.files("k3snb").joinpath("data/claims.yaml").read_text())
    return {str(k): Claim(str(k), v["text"], v.get("source", "")) for k, v in doc["claims"].items()}


def list_claims() -> dict[str, Claim]:
    """Every claim sentence the kit knows, by id."""
    return dict(_load())


def get_claim(claim_id: str) -> Claim:
    """The :class:`Claim` with this registry id.

    Raises:
        InvalidParameter: the id has no sentence in k3snb/data/claims.yaml.
    """
    try:
        return _load()[claim_id]
    except KeyError:
        raise InvalidParameter(f"unknown claim id {claim_id!r}",
                               hint="add its sentence to k3snb/data/claims.yaml (id: {text, source})") from None


# a label, also at the start of "gvisor-2024 (0.0~…)"; "gvisor 2024" (prose) reads as gvisor-2024
_LABEL = re.compile(r"^(?:(host)|gvisor[- ](20\d\d|custom))\b")


def env_labels(places: Iterable[str]) -> list[str]:
    """Environment labels (``host``, ``gvisor-2024``) of runner specs (``gvisor:2024``), labels, or the runner
    names verdict reasons use (``gvisor-2024 (0.0~20240729.0, systrap)``), each once, in first-seen order.

    Raises:
        InvalidParameter: a place that names no runner.
    """
    from ..runners import spec_label

    out: list[str] = []
    for p in places:
        m = _LABEL.match(str(p))
        if m:
            out.append(m.group(1) or f"gvisor-{m.group(2)}")
            continue
        label = spec_label(str(p))  # a runner spec; else InvalidParameter with a hint
        if "-" not in label:  # a runsc given by path carries no build in its label: read it off the path
            year = re.search(r"(20\d\d)\d{4}", str(p))
            label = f"{label}-{year.group(1) if year else 'custom'}"
        out.append(label)
    return list(dict.fromkeys(out))


def judged(claim_id: str, status: str, evidence: Mapping[str, Any], reason: str,
           environments: Iterable[str] | None = None) -> Verdict:
    """A verdict on ``claim_id`` (validated: known id, known status, a reason, evidence for a firm status).

    ``environments``: where the verdict holds (runner specs or labels, see :func:`env_labels`) when the
    notebook opened several runners itself; None leaves it to the run's runner.
    """
    get_claim(claim_id)
    if status not in STATUSES:
        raise InvalidParameter(f"unknown verdict status {status!r}; valid: {', '.join(STATUSES)}")
    if not reason:
        raise InvalidParameter(f"the verdict on {claim_id} needs a reason")
    if status in ("reproduced", "refuted") and not evidence:
        raise InvalidParameter(f"a {status} verdict on {claim_id} needs evidence")
    if isinstance(environments, str):
        environments = [environments]
    envs = env_labels(environments) if environments is not None else None
    return Verdict(claim_id, status, {str(k): jsonable(v) for k, v in evidence.items()}, reason, environments=envs)


def not_testable(claim_id: str, reason: str, evidence: Mapping[str, Any] | None = None,
                 environments: Iterable[str] | None = None) -> Verdict:
    return judged(claim_id, "not-testable", evidence or {}, reason, environments)


def version_text(row: Mapping[str, Any] | None, prog: str) -> str:
    """``runc 1.1.5+ds1``: the version of ``prog`` a row recorded (read inside the runner) — ``containerd``
    from its ``containerd`` field, the row's own OCI runtime from ``runtime_version``, else the field named
    ``prog``; a row that has none says so instead of naming one."""
    r = row or {}
    if prog == "containerd":
        v = r.get("containerd")
    else:
        v = r.get("runtime_version") if r.get("runtime") == prog else r.get(prog)
    return f"{prog} {v}" if v else f"{prog} (version not recorded)"


def versions_text(rows: Sequence[Mapping[str, Any]], prog: str) -> str:
    """The versions of ``prog`` a set of rows recorded, each once, recorded ones first (``containerd 1.6.20~ds1``)."""
    named = sorted({version_text(r, prog) for r in rows}, key=lambda t: ("not recorded" in t, t))
    return " / ".join(named) or version_text(None, prog)


@dataclass(repr=False)
class VerdictTable(Rich):
    """All verdicts of one experiment, one row each: claim id, the claim, status, reason, evidence keys."""

    experiment: str
    verdicts: list[Verdict]

    _title_text = "verdicts"

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = [{"claim": v.claim, "status": f"{Verdict._MARK[v.status]} {v.status}", "reason": v.reason,
                 "the claim": get_claim(v.claim).text, "evidence": ", ".join(v.evidence) or "-"}
                for v in self.verdicts]
        return pd.DataFrame(rows, columns=["claim", "status", "reason", "the claim", "evidence"])

    def claims(self) -> list[str]:
        return [v.claim for v in self.verdicts]

    def counts(self) -> dict[str, int]:
        return {s: sum(v.status == s for v in self.verdicts) for s in STATUSES if any(v.status == s
                                                                                         for v in self.verdicts)}

    def summary(self) -> dict[str, Any]:
        return {"experiment": self.experiment, **self.counts()}

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "verdicts": [v.to_dict() for v in self.verdicts]}

    def _repr_text(self) -> str:
        # one line per verdict, "VERDICT <id> | <status> | <reason>": tests/test_notebooks.py reads these lines
        lines = [f"verdicts of {self.experiment} ({len(self.verdicts)} claims)"]
        lines += [f"VERDICT {v.claim} | {v.status} | {v.reason} [evidence: {', '.join(v.evidence) or '-'}]"
                  for v in self.verdicts]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return render(f"verdicts of {self.experiment}", self.summary(), [("claims", self.to_frame())],
                      text=self._repr_text(), collapsed_after=100)


def _entry(experiment: str):
    from ..experiments._registry import load_registry

    try:
        return load_registry()[experiment]
    except (KeyError, InvalidParameter):
        raise InvalidParameter(f"no experiment {experiment!r} in the registry",
                               hint="pass the notebook's registry id, e.g. '04-ptrace-interception' or '04'") from None


def conclude(experiment: str, verdicts: Sequence[Verdict | Sequence[Verdict]]) -> VerdictTable:
    """Record the experiment's verdicts and return the table that shows them all.

    ``verdicts`` may nest lists (a study function can return several). The claims judged must be exactly
    the claims the registry lists for ``experiment``, each once.

    Raises:
        InvalidParameter: a registry claim without a verdict, a verdict on a claim the registry does not list
            for this experiment, or two verdicts on one claim.
    """
    from ..experiments._record import verdict as persist

    flat: list[Verdict] = []
    for v in verdicts:
        flat.extend([v] if isinstance(v, Verdict) else list(v))
    e = _entry(experiment)
    ids = [v.claim for v in flat]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    missing = [c for c in e.claims if c not in ids]
    extra = [i for i in ids if i not in e.claims]
    if dup or missing or extra:
        raise InvalidParameter(
            f"verdicts of {e.id} do not match its registry claims: missing {missing}, not listed {extra}, "
            f"judged twice {dup}",
            hint="judge every claim of the experiment's `claims:` in k3snb/data/experiments.yaml exactly once")
    order = {c: i for i, c in enumerate(e.claims)}
    flat.sort(key=lambda v: order[v.claim])
    out = []
    for v in flat:
        p = persist(v.claim, v.status, v.evidence, v.reason, environments=v.environments)
        p.experiment = os.environ.get("K3SNB_EXPERIMENT") or e.id
        out.append(p)
    return VerdictTable(e.id, out)
