"""Notebook 91: the research notes' runsc 2024 stability claims, judged per configuration.

Evidence is one row per (source, configuration): sandboxes created, deaths, deaths whose crash text carries
the notes' panic, and the one-sided exact 95 % upper bound on the death rate *of that configuration*.
Configurations are never pooled with each other; the same configuration is summed over sources only when
they ran the same runsc version (the reason says so). The notes' own recipe (``runsc run --detach`` +
``runsc exec``, configuration ``raw-detach``) is judged on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..experiments._record import Verdict
from ._core import judged

NOTES_PANIC = r"readToBlocksAt"  # gofer.(*handle).readToBlocksAt, the bottom of the notes' panic stack
NOTES_REVISION = "0.0~20240729.0-7+b1"  # the Debian package the addendum measured
NOTES_RECIPE = "raw-detach"
MIN_SANDBOXES = 100


def config_rows(result: Any, source: str) -> list[dict[str, Any]]:
    """One row per configuration of a ``StabilityResult`` (this run or a stored study), labelled ``source``."""
    from ..runners.stability import upper_bound

    rx = re.compile(NOTES_PANIC)
    rows = []
    for config, ts in result.trials.items():
        made = [t for t in ts if t.created]
        died = [t for t in made if t.died]
        ub = upper_bound(len(died), len(made))
        rows.append({"source": source, "runsc_version": result.runsc_version, "config": config,
                     "sandboxes": len(made), "deaths": len(died), "failed_creates": len(ts) - len(made),
                     "deaths_with_notes_panic": sum(bool(rx.search(t.crash or t.crash_head or "")) for t in died),
                     "upper95": None if ub is None else round(ub, 4)})
    return rows


def _by_config(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows summed per configuration over sources of one runsc version (the first row's); rows of another
    version are not summed in (:func:`_left_out` names them for the reason)."""
    from ..runners.stability import upper_bound

    out: dict[str, dict[str, Any]] = {}
    version = rows[0]["runsc_version"] if rows else None
    for r in rows:
        if r["runsc_version"] != version:
            continue
        o = out.setdefault(r["config"], {"sandboxes": 0, "deaths": 0, "panics": 0, "sources": []})
        o["sandboxes"] += r["sandboxes"]
        o["deaths"] += r["deaths"]
        o["panics"] += r["deaths_with_notes_panic"]
        o["sources"].append(r["source"])
    for o in out.values():
        ub = upper_bound(o["deaths"], o["sandboxes"])
        o["upper95"] = None if ub is None else round(ub, 4)
    return out


def _left_out(rows: Sequence[Mapping[str, Any]]) -> str:
    """`` Left out: …`` naming the sources (and configurations) of another runsc version than the judged
    one, so a reader sees what the verdict does not rest on; empty when every row was used."""
    if not rows:
        return ""
    version = rows[0]["runsc_version"]
    by: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r["runsc_version"] != version:
            by.setdefault((str(r["source"]), str(r["runsc_version"])), []).append(str(r["config"]))
    if not by:
        return ""
    parts = [f"{src} (runsc {v}: {', '.join(cs)})" for (src, v), cs in sorted(by.items())]
    return f". Left out, another runsc version than the judged {version}: {'; '.join(parts)}"


def _judged(claim: str, status: str, ev: Mapping[str, Any], reason: str, rows: Sequence[Mapping[str, Any]]) -> Verdict:
    return judged(claim, status, ev, reason + _left_out(rows))


def _fmt(c: str, o: Mapping[str, Any]) -> str:
    ub = "" if o["upper95"] is None else f", 95% bound {o['upper95']:.2%}"
    return f"{c} {o['deaths']}/{o['sandboxes']}{ub}"


def _scope(version: str, package: str | None) -> str:
    if package == NOTES_REVISION:
        return f"runsc {version}, Debian {package} (the notes' package)"
    return (f"runsc {version}, Debian {package or 'revision unknown'}; the notes used {NOTES_REVISION}, not "
            "available here, so a difference between the two builds is not ruled out")


def sandbox_deaths(rows: Sequence[Mapping[str, Any]], package: str | None = None,
                   min_sandboxes: int = MIN_SANDBOXES) -> Verdict:
    """The addendum's death claim. reproduced: a death carries the notes' panic (any configuration);
    inconclusive: deaths without it, or fewer than ``min_sandboxes`` of the notes' recipe; refuted: the
    notes' recipe itself ran ``min_sandboxes`` or more with no death (its own bound in the reason)."""
    cfg = _by_config(rows)
    ev = {"stability_rows": [dict(r) for r in rows]}
    version = rows[0]["runsc_version"] if rows else "?"
    panics = {c: o["panics"] for c, o in cfg.items() if o["panics"]}
    deaths = {c: o["deaths"] for c, o in cfg.items() if o["deaths"]}
    if panics:
        return _judged("gvisor-matrix addendum: 2024 sentry panic", "reproduced", ev,
                      f"deaths with the notes' readToBlocksAt panic: {panics}; {_scope(version, package)}", rows)
    if deaths:
        return _judged("gvisor-matrix addendum: 2024 sentry panic", "inconclusive", ev,
                      f"deaths {deaths}, none with the notes' panic", rows)
    recipe = cfg.get(NOTES_RECIPE)
    others = "; ".join(_fmt(c, o) for c, o in cfg.items() if c != NOTES_RECIPE)
    if recipe is None or recipe["sandboxes"] < min_sandboxes:
        n = 0 if recipe is None else recipe["sandboxes"]
        return _judged("gvisor-matrix addendum: 2024 sentry panic", "inconclusive", ev,
                      f"the notes' recipe (run --detach + exec) ran only {n} sandboxes (< {min_sandboxes}); "
                      f"kit configurations, each on its own: {others}", rows)
    return _judged("gvisor-matrix addendum: 2024 sentry panic", "refuted", ev,
                  f"the notes' recipe (run --detach + exec): {_fmt(NOTES_RECIPE, recipe)} "
                  f"(sources: {', '.join(recipe['sources'])}), where the notes saw 4 of 5 die in one batch; kit "
                  f"configurations, each on its own: {others}. Holds for {_scope(version, package)}", rows)


def file_access_shared(rows: Sequence[Mapping[str, Any]]) -> Verdict:
    """The addendum's --file-access=shared claim, configuration by configuration."""
    claim = "gvisor-matrix addendum: --file-access=shared"
    cfg = _by_config(rows)
    ev = {"stability_rows": [dict(r) for r in rows]}
    shared = cfg.get("file-access=shared")
    if not shared or not shared["sandboxes"]:
        return _judged(claim, "not-testable", {}, "--file-access=shared was not among the configurations run", rows)
    if shared["deaths"]:
        return _judged(claim, "refuted", ev, f"--file-access=shared itself died: {_fmt('file-access=shared', shared)}", rows)
    dying = [c for c, o in cfg.items() if c != "file-access=shared" and o["deaths"]]
    clean = [c for c, o in cfg.items() if c != "file-access=shared" and o["sandboxes"] and not o["deaths"]]
    if dying and not clean:
        return _judged(claim, "reproduced", ev, "only --file-access=shared survived: "
                                               + "; ".join(_fmt(c, o) for c, o in cfg.items()), rows)
    if dying:
        return _judged(claim, "refuted", ev, f"deaths in {', '.join(dying)}, but also without deaths: {', '.join(clean)}", rows)
    return _judged(claim, "inconclusive", ev,
                  "no configuration died (" + "; ".join(_fmt(c, o) for c, o in cfg.items()) + "), so shared file "
                  "access is not the only configuration without deaths here, and a fix for a failure that does not "
                  "occur cannot be tested", rows)


def kit_default(rows: Sequence[Mapping[str, Any]], default_flags: list[str] | None, package: str | None = None,
                min_sandboxes: int = MIN_SANDBOXES) -> Verdict:
    """docs/gvisor-stability.md: the kit's 2024 default (runsc's own flags) is stable here, from the ``default``
    configuration alone. not-testable when the kit's default is not runsc's own flags or was not run."""
    claim = "docs/gvisor-stability.md: 2024 default"
    o = _by_config(rows).get("default")
    version = rows[0]["runsc_version"] if rows else "?"
    if default_flags != [] or not o or not o["sandboxes"]:
        return _judged(claim, "not-testable", {}, f"the kit's 2024 default flags are {default_flags}, or the "
                                                 "'default' configuration was not run", rows)
    ev = {"stability_rows": [dict(r) for r in rows], "default_flags": default_flags}
    if o["deaths"]:
        return _judged(claim, "refuted", ev, f"{_fmt('default', o)}", rows)
    if o["sandboxes"] < min_sandboxes:
        return _judged(claim, "inconclusive", ev, f"{_fmt('default', o)}: too few sandboxes to bound the rate", rows)
    return _judged(claim, "reproduced", ev, f"runsc's own defaults (systrap, directfs): {_fmt('default', o)} "
                                           f"(sources: {', '.join(o['sources'])}); {_scope(version, package)}", rows)
