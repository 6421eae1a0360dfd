"""Workarounds from the research as objects: ``apply(runner)``, ``verify(runner)``, ``revert(runner)``.

``k3snb.list_workarounds()`` shows the catalogue; ``k3snb.get_workaround("kmsg")`` (or ``"W1"``) returns
a fresh object. Metadata (title, research W ids, signatures addressed, kind) is data in
``k3snb/data/workarounds.yaml``; profiles in ``k3snb/data/profiles/`` list workaround ids.
"""

from __future__ import annotations

from typing import Any

from ..report import Table
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


class WorkaroundTable(Table):
    """The catalogue: one row per workaround (``include_research_only`` adds the W ids not implemented)."""

    _title_text = "k3snb workarounds"
    _section = "workarounds"

    def summary(self) -> dict[str, Any]:
        kinds = [r["kind"] for r in self.rows]
        return {"workarounds": len(self.rows), "runner": kinds.count("runner"), "flag": kinds.count("flag")}


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

