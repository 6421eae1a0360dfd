"""Workarounds from the research as objects: ``apply(runner)``, ``check(runner)``, ``revert(runner)``.

``k3snb.list_workarounds()`` shows the catalogue; ``k3snb.get_workaround("kmsg")`` (or ``"W1"``) returns
a fresh object. Metadata (title, research W ids, signatures addressed, kind) is data in
``k3snb/data/workarounds.yaml``; profiles in ``k3snb/data/profiles/`` list workaround ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..report import Rich, render
from ._base import (
    LaunchPlan,
    UnknownWorkaround,
    Workaround,
    WorkaroundResult,
    _load_all,
    get_workaround,
    metadata,
    research_only,
)

__all__ = [
    "list_workarounds",
    "get_workaround",
    "Workaround",
    "WorkaroundResult",
    "WorkaroundTable",
    "LaunchPlan",
    "UnknownWorkaround",
    "ids",
]


def ids() -> list[str]:
    _load_all()
    return sorted(Workaround.registry)


@dataclass(repr=False)
class WorkaroundTable(Rich):
    """The catalogue: one row per workaround (``include_research_only`` adds the W ids not implemented)."""

    rows: list[dict[str, Any]]
    _title_text = "k3snb workarounds"

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def summary(self) -> dict[str, Any]:
        kinds = [r["kind"] for r in self.rows]
        return {"workarounds": len(self.rows), "runner": kinds.count("runner"), "flag": kinds.count("flag")}

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(r["id"] for r in self.rows)

    def _repr_html_(self) -> str:
        return render(self._title_text, self.summary(), [("list_workarounds", self.to_frame())], text=self._repr_text())


def list_workarounds(include_research_only: bool = False) -> WorkaroundTable:
    """The workaround catalogue as a table (id, title, kind, research W ids, signatures, flags)."""
    _load_all()
    rows = []
    for wid, m in metadata().items():
        w = get_workaround(wid)
        rows.append({
            "id": wid,
            "title": m["title"],
            "kind": m["kind"],
            "research": ", ".join(m.get("research", [])),
            "signatures": ", ".join(m.get("signatures", [])),
            "flags": " ".join(w.flags()),
            "implemented": True,
        })
    if include_research_only:
        for wid, why in research_only().items():
            rows.append({"id": wid, "title": why, "kind": "research-only", "research": wid, "signatures": "",
                         "flags": "", "implemented": False})
    return WorkaroundTable(rows)

