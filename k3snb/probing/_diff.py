"""``diff(a, b, ...)``: which facts differ between environments (host, gVisor 2022, gVisor 2024)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidParameter
from ..report import Rich, render
from ._probe import EnvProbe, as_probe

if TYPE_CHECKING:
    import pandas as pd

NOT_PROBED = "(not probed)"


@dataclass(repr=False)
class ProbeDiff(Rich):
    """Facts side by side for several probes; ``to_frame()`` shows the differing ones.

    ``fact in d`` is True when that fact differs; ``d[fact]`` gives ``{label: value}``.
    """

    labels: list[str]
    rows: list[dict[str, Any]] = field(repr=False)

    _title_text = "probe diff"

    @property
    def differing(self) -> list[str]:
        return [r["fact"] for r in self.rows if r["differs"]]

    def __contains__(self, fact: object) -> bool:
        return fact in self.differing

    def __getitem__(self, fact: str) -> dict[str, Any]:
        for r in self.rows:
            if r["fact"] == fact:
                return {lb: r[lb] for lb in self.labels}
        raise KeyError(f"no fact {fact!r} in any of {self.labels}")

    def __len__(self) -> int:
        return len(self.differing)

    def summary(self) -> dict[str, Any]:
        return {"labels": " vs ".join(self.labels), "facts": len(self.rows), "differing": len(self.differing)}

    def to_frame(self, all: bool = False) -> pd.DataFrame:  # noqa: A002 - mirrors a common pandas idiom
        """Columns ``fact``, one per label, ``differs``; only differing facts unless ``all=True``."""
        import pandas as pd

        rows = self.rows if all else [r for r in self.rows if r["differs"]]
        return pd.DataFrame(rows, columns=["fact", *self.labels, "differs"])

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "differing": {f: self[f] for f in self.differing}}

    def _repr_text(self) -> str:
        lines = [f"<ProbeDiff {' vs '.join(self.labels)}: {len(self.differing)} of {len(self.rows)} facts differ>"]
        for r in self.rows:
            if r["differs"]:
                lines.append(f"  {r['fact']}: " + " | ".join(f"{lb}={r[lb]}" for lb in self.labels))
        return "\n".join(lines[:40]) + ("\n  …" if len(lines) > 40 else "")

    def __repr__(self) -> str:
        return self._repr_text().splitlines()[0]

    def _repr_html_(self) -> str:
        df = self.to_frame()
        groups = df["fact"].str.split(".").str[0]
        sections = [(g, df[groups == g].reset_index(drop=True)) for g in dict.fromkeys(groups)]
        return render(f"probe diff: {' vs '.join(self.labels)}", self.summary(), sections, text=self._repr_text())


def diff(
    a: EnvProbe | dict | str | os.PathLike,
    b: EnvProbe | dict | str | os.PathLike,
    *more: EnvProbe | dict | str | os.PathLike,
    ignore: Iterable[str] = (),
) -> ProbeDiff:
    """Compare two or more probes fact by fact.

    Args:
        a, b, *more: probes (``EnvProbe``, a probe dict, or a path to a probe JSON).
        ignore: fact-name prefixes to leave out (e.g. ``["mounts.count"]``).

    Returns:
        A :class:`ProbeDiff`; ``to_frame()`` lists the differing facts, one column per probe.

    Raises:
        InvalidParameter: an argument is not a probe, or two probes carry the same label.
    """
    probes = [as_probe(x) for x in (a, b, *more)]
    labels = [p.label for p in probes]
    dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
    if dupes:
        raise InvalidParameter(f"probes share the label(s) {dupes}; columns would collide",
                               hint="pass label=... to k3snb.probe() or set probe.label before diffing")
    if isinstance(ignore, str):
        ignore = [ignore]
    ignore = tuple(ignore)
    values = [{f.fact: f.value for f in p.facts} for p in probes]
    order: dict[str, None] = {}
    for p in probes:
        order.update((f.fact, None) for f in p.facts)
    rows = []
    for fact in order:
        if ignore and fact.startswith(ignore):
            continue
        row: dict[str, Any] = {"fact": fact}
        for lb, vals in zip(labels, values, strict=True):
            row[lb] = vals.get(fact, NOT_PROBED)
        seen = [row[lb] for lb in labels]
        row["differs"] = any(v != seen[0] for v in seen[1:])
        rows.append(row)
    return ProbeDiff(labels, rows)


KEY_FACTS = ("sandbox.kind", "kernel.release", "runsc.version", "rootfs.type", "rootfs.magic", "dev.kmsg",
             "proc_sys.kernel/panic", "proc_sys.vm/panic_on_oom", "proc_sys.kernel/keys/root_maxkeys",
             "proc_sys.vm/overcommit_memory", "proc_sys.kernel/cap_last_cap", "proc_sys.net/ipv4/ip_forward",
             "cgroup.version", "cgroup.ns", "userns.uid_map", "statx.at_no_automount", "mount.rbind",
             "mount.pivot_root", "iptables.legacy.nat", "iptables.nft.filter")


def key_facts(probes: Iterable[EnvProbe] | dict[str, EnvProbe], facts: Iterable[str] = KEY_FACTS) -> pd.DataFrame:
    """A compact table: one row per fact in ``facts``, one column per probe (label)."""
    import pandas as pd

    items = list(probes.values()) if isinstance(probes, dict) else list(probes)
    ps = [as_probe(x) for x in items]
    rows = []
    for fact in facts:
        rows.append({"fact": fact, **{p.label: p.get(fact, NOT_PROBED) for p in ps}})
    return pd.DataFrame(rows, columns=["fact", *(p.label for p in ps)])
