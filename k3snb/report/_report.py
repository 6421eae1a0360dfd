"""The findings report of one or more runs: claims × environments, a section per experiment, the
environment facts of each run and, for two runs or more, what changed.

One self-contained HTML page (inline CSS, plots as data URIs, no JavaScript, nothing fetched) or a
markdown file for write-ups (plots written next to it). Every string that came from a run passes
through :func:`html.escape` (HTML) or :func:`_md` (markdown): log lines hold ``<script>`` too.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ._html import Rich, render
from ._runs import VERDICTS, RunData, Unit, env_label, env_sort_key, read_run, resolve_run

MARK = {"reproduced": "✔", "refuted": "✘", "not-testable": "∅", "inconclusive": "?"}
_EXCERPT = 400


def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


@lru_cache(maxsize=1)
def _report_css() -> str:
    return resources.files("k3snb.report").joinpath("static/report.css").read_text()


@lru_cache(maxsize=1)
def _claim_texts() -> dict[str, str]:
    """The research's claim sentences by id (k3snb/data/claims.yaml), for verdicts that name only the id."""
    try:
        import yaml

        doc = yaml.safe_load(resources.files("k3snb").joinpath("data/claims.yaml").read_text()) or {}
    except Exception:  # the report names the ids alone when the catalogue is missing or malformed
        return {}
    claims = doc.get("claims") if isinstance(doc, dict) else None
    return {str(k): str(v.get("text", "")) for k, v in (claims or {}).items() if isinstance(v, dict)}


def claim_id(claim: str) -> tuple[str, str]:
    """``"S01: kubelet tunables …"`` → ``("S01", "kubelet tunables …")``; a bare id → its sentence from
    the claims catalogue; otherwise ``(claim, "")``."""
    head, sep, rest = claim.partition(":")
    if sep and len(head) <= 40:
        return head.strip(), rest.strip()
    return claim, _claim_texts().get(claim, "")


def inline_md(text: str) -> str:
    """Escaped text with the notebook markdown a reader expects to see rendered: ``**bold**``, `` `code` ``.
    Escaping comes first, so nothing in ``text`` can become markup of its own."""
    s = esc(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)


def excerpt(value: Any, n: int = _EXCERPT) -> str:
    s = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return s if len(s) <= n else s[: n - 1] + "…"


# -- notebook exports and their content ----------------------------------------------------------------

_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>", re.I)


def export_notebook(ipynb: str | os.PathLike, force: bool = False) -> Path:
    """Export an executed notebook to HTML next to it (nbconvert, lab template, images embedded).

    The page works from a file without network: the template's CDN scripts (require.js, MathJax) are
    dropped. An export newer than its notebook is reused.
    """
    src = Path(ipynb)
    out = src.with_suffix(".html")
    if not force and out.is_file() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(src, as_version=4)
    body, _ = HTMLExporter(template_name="lab", embed_images=True).from_notebook_node(nb)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(_REMOTE_SCRIPT.sub("", body))
    os.replace(tmp, out)
    return out


def _read_nb(path: Path | None):
    if path is None or not path.is_file():
        return None
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except Exception:
        return None


def hypothesis_of(nb) -> str:
    """The ``**Hypothesis.**`` paragraph of a notebook's markdown (the template's), or ""."""
    if nb is None:
        return ""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        m = re.search(r"\*\*Hypothesis\.?\*\*\s*(.+?)(?:\n\s*\n|$)", cell.source, re.S)
        if m:
            return " ".join(m.group(1).split())
    return ""


def images_of(nb) -> list[bytes]:
    """PNG images the notebook's cells displayed (its plots), in cell order."""
    out = []
    for cell in (nb.cells if nb is not None else []):
        for o in cell.get("outputs", []):
            png = (o.get("data") or {}).get("image/png")
            if png:
                try:
                    out.append(base64.b64decode(png if isinstance(png, str) else "".join(png)))
                except ValueError:
                    continue
    return out


def _record_plots(u: Unit) -> list[bytes]:
    """Pictures the report draws from a unit's records itself: a stages heat map for every record of
    container/pod attempt rows (runtime and pod experiments), whether or not the notebook plotted it."""
    from . import plots

    out = []
    for key, value in u.records.items():
        if plots.is_attempt_rows(value):
            try:
                out.append(plots.figure_png(plots.plot_stages(value, title=f"stages reached: {key}")))
            except Exception:  # a record the heat map cannot read is shown as a table above
                continue
    return out


# -- the model: cells of the matrix, claims not judged, changes between runs -------------------------


@dataclass
class Cell:
    """One verdict in the matrix: claim × environment, from one unit of one run."""

    claim: str
    env: str
    status: str
    reason: str
    evidence: dict[str, Any]
    unit: str
    run: str


@dataclass
class Change:
    kind: str  # flipped | new failure | fixed | new claim | dropped claim
    what: str
    before: str
    after: str


@dataclass(repr=False)
class Report(Rich):
    """Findings of one or more runs (oldest first). ``write(path)`` renders ``.html`` or ``.md``."""

    runs: list[RunData]
    cells: list[Cell] = field(default_factory=list)
    not_judged: list[dict[str, str]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    _title_text = "findings report"

    def __post_init__(self) -> None:
        if not self.cells:
            self.cells = _collapse([c for r in self.runs for c in _cells(r)])
            self.not_judged = [x for r in self.runs for x in _not_judged(r)]
            self.changes = [c for a, b in zip(self.runs, self.runs[1:], strict=False) for c in compare(a, b)]

    # structure -------------------------------------------------------------------------------
    @property
    def claims(self) -> list[str]:
        return list(dict.fromkeys(c.claim for c in self.cells))

    @property
    def environments(self) -> list[str]:
        return sorted({c.env for c in self.cells}, key=env_sort_key)

    def cell(self, claim: str, env: str) -> list[Cell]:
        return [c for c in self.cells if c.claim == claim and c.env == env]

    def to_frame(self):
        """The matrix: one row per judged claim, one column per environment (statuses, latest run last)."""
        import pandas as pd

        envs = self.environments
        rows = []
        for claim in self.claims:
            row = {"claim": claim}
            for e in envs:
                row[env_label(e)] = " / ".join(dict.fromkeys(c.status for c in self.cell(claim, e))) or ""
            rows.append(row)
        return pd.DataFrame(rows, columns=["claim", *[env_label(e) for e in envs]])

    def summary(self) -> dict[str, Any]:
        return {"runs": ", ".join(r.label for r in self.runs), "claims judged": len(self.claims),
                "environments": ", ".join(env_label(e) for e in self.environments),
                "not judged": len(self.not_judged), "changes": len(self.changes)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [{"run": r.label, "folder": str(r.path), "facts": r.facts(), "counts": r.counts()}
                     for r in self.runs],
            "environments": self.environments,
            "claims": [{"claim": cl, "cells": {e: [{"status": c.status, "reason": c.reason, "unit": c.unit,
                                                    "run": c.run} for c in self.cell(cl, e)]
                                               for e in self.environments if self.cell(cl, e)}}
                       for cl in self.claims],
            "not_judged": self.not_judged,
            "changes": [c.__dict__ for c in self.changes],
        }

    def _repr_text(self) -> str:
        n = {s: sum(1 for c in self.cells if c.status == s) for s in VERDICTS}
        return (f"<Report {len(self.runs)} run(s), {len(self.claims)} claims × {len(self.environments)} "
                f"environments; " + ", ".join(f"{v} {k}" for k, v in n.items()) + ">")

    def _repr_html_(self) -> str:
        return render(self._title_text, self.summary(),
                      [("claims × environments", self.to_frame()),
                       ("not judged", _frame(self.not_judged, ["claim", "experiment", "environment", "why"]))],
                      text=self._repr_text())

    # output ------------------------------------------------------------------------------------
    def write(self, path: str | os.PathLike, export: bool = True) -> Path:
        """Write the report as HTML (``.html``) or markdown (``.md``) and return the path.

        Args:
            export: export each executed notebook to HTML next to it (nbconvert) and link it.

        Raises:
            UsageError: another suffix, or a folder that cannot be written.
        """
        out = Path(path).absolute()
        if out.suffix not in (".html", ".md"):
            raise UsageError(f"report output {path} must end in .html or .md", hint="e.g. --out report.html")
        if not out.parent.is_dir():
            raise UsageError(f"cannot write report {path}: folder {out.parent} does not exist",
                             hint=f"create it first (mkdir -p {out.parent}) or pass a path in an existing folder")
        links = self._exports(out) if export else {}
        text = self.to_html(links, out) if out.suffix == ".html" else self.to_markdown(links, out)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, out)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return out

    def _exports(self, out: Path) -> dict[tuple[str, str], str]:
        links = {}
        for r in self.runs:
            for u in r.units:
                if u.notebook is None:
                    continue
                try:
                    h = export_notebook(u.notebook)
                except Exception:  # a broken notebook still gets a report, linked as .ipynb
                    h = u.notebook
                links[(r.label, u.name)] = os.path.relpath(h, out.parent)
        return links

    def to_html(self, links: dict[tuple[str, str], str] | None = None, out: Path | None = None) -> str:
        return _HtmlWriter(self, links or {}).page()

    def to_markdown(self, links: dict[tuple[str, str], str] | None = None, out: Path | None = None) -> str:
        return _markdown(self, links or {}, out)


def _frame(rows: list[dict], columns: list[str]):
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def _cells(r: RunData) -> list[Cell]:
    out = []
    for u in r.units:
        for v in u.verdicts:
            status = v.get("status") if v.get("status") in VERDICTS else "inconclusive"
            for e in u.verdict_envs(v):
                out.append(Cell(str(v["claim"]), e, status, str(v.get("reason") or ""),
                                v.get("evidence") or {}, u.name, r.label))
    return out


def _collapse(cells: list[Cell]) -> list[Cell]:
    """Drop the platform from environment keys of a build that ran on one platform only: columns are
    split by platform only where it varies."""
    platforms: dict[str, set[str]] = {}
    for c in cells:
        base, _, plat = c.env.partition("/")
        platforms.setdefault(base, set()).add(plat)
    for c in cells:
        base = c.env.partition("/")[0]
        if len(platforms[base] - {""}) <= 1:  # "" = platform not recorded (e.g. a probe's evidence key)
            c.env = base
    return cells


def _judges(verdicts: Iterable[dict[str, Any]], cid: str) -> bool:
    return any(v["claim"] == cid or claim_id(v["claim"])[0] == cid or v["claim"].startswith(cid + " ")
               for v in verdicts)


def _not_judged(r: RunData) -> list[dict[str, str]]:
    """Registry claims of each unit that got no verdict, with why (skipped, failed, no verdict)."""
    out = []
    for u in r.units:
        if u.status == "skipped":
            why = f"skipped: {u.reason or 'no reason given'}"
        elif u.status == "failed":
            why = f"failed: {u.reason or 'see the notebook'}"
        else:
            why = "ran, but the notebook recorded no verdict for it"
        for cid in u.claims:
            if u.status == "passed" and _judges(u.verdicts, cid):
                continue
            out.append({"claim": cid, "experiment": u.name, "environment": env_label(u.env), "why": why,
                        "run": r.label})
    return out


def compare(a: RunData, b: RunData) -> list[Change]:
    """What changed from run ``a`` to run ``b``: flipped verdicts, new failures, fixes, claims added/dropped."""
    both = _collapse(_cells(a) + _cells(b))

    def statuses(run: str) -> dict[tuple[str, str], str]:
        d: dict[tuple[str, str], str] = {}
        for c in both:
            if c.run == run:
                d[(c.claim, c.env)] = c.status if d.get((c.claim, c.env), c.status) == c.status else "mixed"
        return d

    sa, sb = statuses(a.label), statuses(b.label)
    out = []
    for key in sorted(set(sa) & set(sb)):
        if sa[key] != sb[key]:
            out.append(Change("flipped", f"{key[0]} [{env_label(key[1])}]", sa[key], sb[key]))
    ua, ub = {u.name: u for u in a.units}, {u.name: u for u in b.units}
    for name, u in ub.items():
        before = ua.get(name)
        if u.status == "failed" and (before is None or before.status != "failed"):
            out.append(Change("new failure", name, before.status if before else "absent", f"failed: {u.reason}"))
        elif before is not None and before.status == "failed" and u.status == "passed":
            out.append(Change("fixed", name, f"failed: {before.reason}", "passed"))
    ca, cb = {k[0] for k in sa}, {k[0] for k in sb}
    out += [Change("new claim", c, "not judged", "judged") for c in sorted(cb - ca)]
    out += [Change("dropped claim", c, "judged", "not judged") for c in sorted(ca - cb)]
    return out


# -- HTML ----------------------------------------------------------------------------------------------


class _HtmlWriter:
    def __init__(self, rep: Report, links: dict[tuple[str, str], str]) -> None:
        self.rep, self.links = rep, links

    def page(self) -> str:
        rep = self.rep
        title = "k3snb findings — " + ", ".join(r.label for r in rep.runs)
        parts = [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            "<link rel='icon' href='data:,'>",  # no favicon request from a file:// page
            f"<title>{esc(title)}</title><style>{_report_css()}</style></head><body>",
            f"<h1>{esc(title)}</h1>",
            self._overview(),
            self._matrix(),
            self._not_judged(),
        ]
        if len(rep.runs) > 1:
            parts.append(self._changes())
        parts.append(self._experiments())
        parts.append(self._facts())
        parts.append("</body></html>")
        return "".join(parts)

    def _overview(self) -> str:
        rows = []
        for r in self.rep.runs:
            c = r.counts()
            rows.append(
                f"<li><b>{esc(r.label)}</b>: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped "
                f"experiments; verdicts " + ", ".join(
                    f"<span class='v v-{s}'>{c[s]} {s}</span>" for s in VERDICTS) + "</li>")
        return "<ul class='overview'>" + "".join(rows) + "</ul>"

    def _badge(self, c: Cell, with_run: bool) -> str:
        ev = "".join(f"<dt>{esc(k)}</dt><dd><code>{esc(excerpt(v))}</code></dd>" for k, v in c.evidence.items())
        who = esc(c.unit) + (f" · {esc(c.run)}" if with_run else "")
        tip = f"{c.status}: {c.reason}" if c.reason else c.status
        return (f"<details class='cell v-{c.status}' title='{esc(tip)}' data-status='{c.status}'>"
                f"<summary>{MARK[c.status]} {c.status}{' <small>' + esc(c.run) + '</small>' if with_run else ''}"
                f"</summary><div class='why'><p>{esc(c.reason) or '<i>no reason given</i>'}</p>"
                f"<p class='src'>from {who}</p>" + (f"<dl>{ev}</dl>" if ev else "<p><i>no evidence</i></p>")
                + "</div></details>")

    def _matrix(self) -> str:
        rep = self.rep
        envs = rep.environments
        multi = len(rep.runs) > 1
        head = "".join(f"<th scope='col' data-env='{esc(e)}'>{esc(env_label(e))}</th>" for e in envs)
        body = []
        for claim in rep.claims:
            cid, text = claim_id(claim)
            cells = []
            for e in envs:
                seen: dict[tuple[str, str], Cell] = {}
                for c in rep.cell(claim, e):  # one badge per (run, status): runners agreeing fold into one
                    seen.setdefault((c.run, c.status), c)
                inner = "".join(self._badge(c, multi) for c in seen.values()) or "<span class='none'>—</span>"
                cells.append(f"<td data-env='{esc(e)}'>{inner}</td>")
            label = f"<b>{esc(cid)}</b>" + (f" {esc(text)}" if text else "")
            body.append(f"<tr class='claim' data-claim='{esc(claim)}'><th scope='row'>{label}</th>{''.join(cells)}</tr>")
        if not body:
            return "<h2 id='matrix'>Claims × environments</h2><p>No verdicts in these runs.</p>"
        return ("<h2 id='matrix'>Claims × environments</h2>"
                "<p class='hint'>Click a verdict for its reason and evidence; hover for the reason.</p>"
                f"<table class='matrix'><thead><tr><th>claim</th>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>")

    def _not_judged(self) -> str:
        rows = self.rep.not_judged
        if not rows:
            return ""
        multi = len(self.rep.runs) > 1
        groups: dict[tuple[str, str, str, str], list[str]] = {}  # one row per experiment and reason
        for x in rows:
            groups.setdefault((x["experiment"], x["environment"], x["why"], x["run"]), []).append(x["claim"])
        trs = "".join(
            "<tr><td>" + ", ".join(f"<b title='{esc(claim_id(c)[1])}'>{esc(c)}</b>" for c in claims) + "</td>"
            f"<td>{esc(exp)}</td><td>{esc(env)}</td>" + (f"<td>{esc(run)}</td>" if multi else "")
            + f"<td>{esc(why)}</td></tr>" for (exp, env, why, run), claims in groups.items())
        return ("<h2 id='not-judged'>Claims not judged</h2><table class='plain not-judged'><thead><tr>"
                "<th>claims</th><th>experiment</th><th>environment</th>" + ("<th>run</th>" if multi else "")
                + f"<th>why</th></tr></thead><tbody>{trs}</tbody></table>")

    def _changes(self) -> str:
        ch = self.rep.changes
        pair = " → ".join(r.label for r in self.rep.runs)
        if not ch:
            return f"<h2 id='changes'>What changed</h2><p>Nothing changed ({esc(pair)}).</p>"
        trs = "".join(f"<tr class='change {esc(c.kind.replace(' ', '-'))}'><td>{esc(c.kind)}</td><td>{esc(c.what)}</td>"
                      f"<td>{esc(c.before)}</td><td>{esc(c.after)}</td></tr>" for c in ch)
        return (f"<h2 id='changes'>What changed</h2><p>{esc(pair)}</p><table class='plain changes'><thead><tr>"
                f"<th>change</th><th>what</th><th>before</th><th>after</th></tr></thead><tbody>{trs}</tbody></table>")

    def _experiments(self) -> str:
        parts = ["<h2 id='experiments'>Experiments</h2>"]
        multi = len(self.rep.runs) > 1
        groups: dict[str, list[tuple[RunData, Unit]]] = {}
        for r in self.rep.runs:
            for u in r.units:
                groups.setdefault(u.experiment, []).append((r, u))
        for exp, members in groups.items():
            first = members[0][1]
            nb = next((n for n in (_read_nb(u.notebook) for _, u in members) if n is not None), None)
            hyp = hypothesis_of(nb)
            parts.append(f"<section class='experiment' id='exp-{esc(exp)}'><h3>{esc(exp)}"
                         + (f" — {esc(first.title)}" if first.title else "") + "</h3>")
            if first.claims:
                parts.append(f"<p class='claims'>claims: {esc(', '.join(first.claims))}</p>")
            if hyp:
                parts.append(f"<p class='hypothesis'><b>Hypothesis.</b> {inline_md(hyp)}</p>")
            for r, u in members:
                parts.append(self._unit(r, u, multi))
            parts.append("</section>")
        return "".join(parts)

    def _unit(self, r: RunData, u: Unit, multi: bool) -> str:
        link = self.links.get((r.label, u.name))
        dur = f", {u.duration_s:.0f} s" if isinstance(u.duration_s, int | float) else ""
        head = (f"<h4><span class='status s-{esc(u.status)}'>{esc(u.status)}</span> {esc(u.name)} "
                f"<small>{esc(env_label(u.env))}{dur}" + (f" · {esc(r.label)}" if multi else "") + "</small></h4>")
        parts = [f"<div class='unit' data-unit='{esc(u.name)}'>{head}"]
        if u.reason:
            parts.append(f"<p class='reason'>{esc(u.reason)}</p>")
        if link:
            parts.append(f"<p><a class='notebook' href='{esc(link)}'>executed notebook</a></p>")
        if u.verdicts:
            trs = "".join(
                f"<tr class='v-{esc(v.get('status'))}'><td>{MARK.get(v.get('status'), '?')} {esc(v.get('status'))}</td>"
                f"<td>{esc(v['claim'])}</td><td>{esc(', '.join(env_label(e) for e in u.verdict_envs(v)))}</td>"
                f"<td>{esc(v.get('reason') or '')}</td></tr>" for v in u.verdicts)
            parts.append("<table class='plain verdicts'><thead><tr><th>verdict</th><th>claim</th><th>environments"
                         f"</th><th>reason</th></tr></thead><tbody>{trs}</tbody></table>")
        evidence = {k: val for v in u.verdicts for k, val in (v.get("evidence") or {}).items()}
        if evidence:
            parts.append(f"<details class='evidence'><summary>evidence ({len(evidence)} records)</summary>"
                         + "".join(self._record(k, u.records.get(k, val)) for k, val in list(evidence.items())[:40])
                         + "</details>")
        for png in images_of(_read_nb(u.notebook)) + _record_plots(u):
            parts.append(f"<img class='plot' alt='plot from {esc(u.name)}' "
                         f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
        parts.append("</div>")
        return "".join(parts)

    def _record(self, key: str, value: Any) -> str:
        if not isinstance(value, list | dict | str | int | float | bool | type(None)):
            value = None
        body = _value_html(value)
        return f"<div class='record'><div class='key'>{esc(key)}</div>{body}</div>"

    def _facts(self) -> str:
        runs = self.rep.runs
        facts = [r.facts() for r in runs]
        keys = list(dict.fromkeys(k for f in facts for k in f))
        head = "".join(f"<th>{esc(r.label)}</th>" for r in runs)
        trs = "".join(f"<tr><th>{esc(k)}</th>" + "".join(f"<td>{esc(f.get(k, ''))}</td>" for f in facts) + "</tr>"
                      for k in keys)
        return (f"<h2 id='environment'>Environment of each run</h2><table class='plain facts'><thead><tr><th></th>"
                f"{head}</tr></thead><tbody>{trs}</tbody></table>")


def _value_html(value: Any, rows: int = 20) -> str:
    """A record as a small table (list of dicts, dict) or an escaped excerpt."""
    if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        cols = list(dict.fromkeys(k for x in value[:rows] for k in x))[:12]
        trs = "".join("<tr>" + "".join(f"<td>{esc(excerpt(x.get(c, ''), 160))}</td>" for c in cols) + "</tr>"
                      for x in value[:rows])
        more = f"<p class='more'>… {len(value) - rows} more rows</p>" if len(value) > rows else ""
        return ("<table class='plain rec'><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cols)
                + f"</tr></thead><tbody>{trs}</tbody></table>{more}")
    if isinstance(value, dict) and value and len(value) <= 40:
        return "<dl class='kv'>" + "".join(f"<dt>{esc(k)}</dt><dd><code>{esc(excerpt(v, 200))}</code></dd>"
                                           for k, v in value.items()) + "</dl>"
    return f"<pre>{esc(excerpt(value, 1200))}</pre>"


# -- markdown ------------------------------------------------------------------------------------------


_MD_PUNCT = re.compile(r"[\\`*\[\]|]")  # code, emphasis, links, table cells: always literal
_MD_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")  # snake_case stays as it is (no emphasis)
_MD_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # `<b`, `</`, `<!--`: raw HTML or autolinks; `a < b` stays
_MD_ENTITY = re.compile(r"&(?=#?[0-9A-Za-z]+;)")  # `&amp;` would render as `&`
_MD_LEAD = re.compile(r"^(?:[#>+=-]|\d+[.)])")  # a heading, quote, list or rule at a line's start


def _md(v: Any, *, line_start: bool = False) -> str:
    """Inline markdown for text from runs (reasons, claims, facts): one line, every character read
    literally by a markdown renderer (tables, emphasis, code, links, raw HTML; with ``line_start``, where
    the text begins a line, also a leading #, >, - or ``1.``), yet plain to read where nothing needs
    escaping (``9p -> ext4``, ``net_raw``, ``0.0~20240729.0``)."""
    s = " ".join(str(v).split())
    s = _MD_PUNCT.sub(lambda m: "\\" + m.group(0), s)
    s = _MD_UNDERSCORE.sub(r"\\_", s)
    s = _MD_TAG.sub(r"\\<", s)
    s = _MD_ENTITY.sub(r"\\&", s)
    if s.count("~") > 1:  # GFM strikethrough needs a pair; a lone ~ (runsc versions) reads as it is
        s = s.replace("~", "\\~")
    return _MD_LEAD.sub(lambda m: m.group(0)[:-1] + "\\" + m.group(0)[-1], s) if line_start else s


def _md_code(v: Any) -> str:
    """A one-line code span (backslashes are literal inside one, so a backtick becomes a quote)."""
    return "`" + " ".join(str(v).replace("`", "'").split()) + "`"


def _markdown(rep: Report, links: dict[tuple[str, str], str], out: Path | None) -> str:
    lines = [f"# k3snb findings — {_md(', '.join(r.label for r in rep.runs))}", ""]
    envs = rep.environments
    lines += ["## Claims × environments", ""]
    if rep.claims:
        lines.append("| claim | " + " | ".join(_md(env_label(e)) for e in envs) + " |")
        lines.append("|---|" + "---|" * len(envs))
        for claim in rep.claims:
            cells = []
            for e in envs:
                st = list(dict.fromkeys(c.status for c in rep.cell(claim, e)))
                cells.append(" / ".join(f"{MARK[s]} {s}" for s in st) or "—")
            cid, text = claim_id(claim)
            lines.append(f"| **{_md(cid)}** {_md(text)} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += ["Reasons:", ""]
        for claim in rep.claims:
            said: dict[tuple[str, str], list[str]] = {}  # (status, reason) -> environments
            for c in (c for c in rep.cells if c.claim == claim):
                envs_of = said.setdefault((c.status, c.reason), [])
                if env_label(c.env) not in envs_of:
                    envs_of.append(env_label(c.env))
            for (status, reason), where in said.items():
                lines.append(f"- **{_md(claim_id(claim)[0])}** [{_md(', '.join(where))}] {status}: {_md(reason)}")
        lines.append("")
    else:
        lines += ["No verdicts in these runs.", ""]
    if rep.not_judged:
        lines += ["## Claims not judged", "", "| claim | experiment | environment | why |", "|---|---|---|---|"]
        lines += [f"| {_md(x['claim'])} | {_md(x['experiment'])} | {_md(x['environment'])} | {_md(x['why'])} |"
                  for x in rep.not_judged]
        lines.append("")
    if len(rep.runs) > 1:
        lines += ["## What changed", ""]
        if rep.changes:
            lines += ["| change | what | before | after |", "|---|---|---|---|"]
            lines += [f"| {_md(c.kind)} | {_md(c.what)} | {_md(c.before)} | {_md(c.after)} |" for c in rep.changes]
        else:
            lines.append("Nothing changed.")
        lines.append("")
    lines += ["## Experiments", ""]
    img_dir = out.with_name(out.stem + "_files") if out is not None else None
    n_img = 0
    for r in rep.runs:
        for u in r.units:
            lines.append(f"### {_md(u.name)} ({u.status}, {_md(env_label(u.env))})")
            if u.title:
                lines.append(f"*{_md(u.title)}*")
            if u.reason:
                lines.append(f"> {_md(u.reason, line_start=True)}")
            if (link := links.get((r.label, u.name))):
                lines.append(f"[executed notebook]({link})")
            lines.append("")
            for v in u.verdicts:
                lines.append(f"- {MARK.get(v.get('status'), '?')} **{_md(v.get('status'))}** — {_md(v['claim'])}: "
                             f"{_md(v.get('reason') or '')}")
                for k, val in list((v.get("evidence") or {}).items())[:8]:
                    lines.append(f"  - evidence {_md_code(k)}: {_md(excerpt(val, 200))}")
            if img_dir is not None:
                for png in images_of(_read_nb(u.notebook)):
                    img_dir.mkdir(exist_ok=True)
                    n_img += 1
                    f = img_dir / f"plot-{n_img:02d}.png"
                    f.write_bytes(png)
                    lines.append(f"\n![plot from {_md(u.name)}]({img_dir.name}/{f.name})")
            lines.append("")
    lines += ["## Environment of each run", ""]
    facts = [r.facts() for r in rep.runs]
    keys = list(dict.fromkeys(k for f in facts for k in f))
    lines.append("| | " + " | ".join(_md(r.label) for r in rep.runs) + " |")
    lines.append("|---|" + "---|" * len(rep.runs))
    lines += [f"| {_md(k)} | " + " | ".join(_md(f.get(k, "")) for f in facts) + " |" for k in keys]
    return "\n".join(lines) + "\n"


# -- entry points --------------------------------------------------------------------------------------


def make_report(
    runs: str | os.PathLike | Sequence[str | os.PathLike | RunData],
    out: str | os.PathLike | None = None,
    *,
    base: str | os.PathLike | None = None,
    export: bool = True,
) -> Report:
    """Build the findings report of one run or several (oldest first) and, with ``out``, write it.

    Args:
        runs: a run folder, a folder name under the runs base, ``"latest"``, a ``RunSummary``, or a list of them.
        out: ``FILE.html`` (self-contained page) or ``FILE.md`` (markdown for write-ups); None writes nothing.
        base: where run names are looked up (default ``$K3SNB_RUNS`` or ``./runs``).
        export: export the executed notebooks to HTML next to them and link them.

    Raises:
        UsageError: a run that does not exist, an output that is not .html/.md or cannot be written.
    """
    if isinstance(runs, str | os.PathLike | RunData) or hasattr(runs, "run_dir"):
        runs = [runs]
    if not runs:
        raise UsageError("no runs given", hint="pass a run folder (`k3snb runs` lists them)")
    data = [r if isinstance(r, RunData) else read_run(resolve_run(getattr(r, "run_dir", r), base)) for r in runs]
    rep = Report(data)
    if out is not None:
        rep.write(out, export=export)
    return rep
