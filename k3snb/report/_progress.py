"""Progress of a ``run_experiments`` batch, per experiment: running, passed, failed, skipped.

In JupyterLab an ipywidgets bar and status table refresh as cells finish; in a kernel without a front
end (papermill) one display is updated in place; on a terminal it is tqdm, in CI logs one line per
experiment. Whatever the mode, the output a notebook keeps is the final state with a text fallback —
never a bar frozen at 0 %.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ._html import esc

_ICON = {"pending": "·", "running": "▶", "passed": "✔", "failed": "✘", "skipped": "∅"}


class RunProgress:
    """A tqdm-like progress view (``set_postfix_str``, ``update``, ``close``, ``disable``) that also
    knows each experiment's status (``start(name)``, ``done(row)``)."""

    def __init__(self, names: list[str], enabled: bool = True, desc: str = "experiments") -> None:
        self.names = list(names)
        self.status: dict[str, str] = dict.fromkeys(self.names, "pending")
        self.detail: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.n = 0
        self.desc = desc
        self.mode = _mode(enabled)
        self.disable = self.mode in ("off", "lines")  # callers print their own line per experiment then
        self._bar = self._handle = self._widget = None
        if self.mode == "tqdm":
            from tqdm import tqdm

            self._bar = tqdm(total=len(self.names), desc=desc, unit="cell", file=sys.stderr)
        elif self.mode in ("widget", "display"):
            from IPython.display import display

            if self.mode == "widget":
                import ipywidgets

                self._progress = ipywidgets.IntProgress(value=0, min=0, max=max(1, len(self.names)),
                                                        description=desc)
                self._table = ipywidgets.HTML(value=self._html(with_bar=False))
                self._widget = ipywidgets.VBox([self._progress, self._table])
                self._handle = display(self._widget, display_id=True)
            else:
                self._handle = display(self._bundle(), raw=True, display_id=True)

    # tqdm's interface ----------------------------------------------------------------------------
    def set_postfix_str(self, name: str) -> None:
        self.start(name)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._handle is not None:  # the final state replaces the widget in the saved notebook
            self._handle.update(self._bundle(), raw=True)

    # per experiment --------------------------------------------------------------------------------
    def start(self, name: str) -> None:
        if name in self.status:
            self.status[name] = "running"
            self.started[name] = time.monotonic()
            if self._bar is not None:
                self._bar.set_postfix_str(name)
            self._refresh()

    def done(self, row: dict[str, Any]) -> None:
        name = row.get("id", "")
        self.status[name] = row.get("status", "failed")
        verdicts = ", ".join(f"{row[k]} {k}" for k in ("reproduced", "refuted", "not-testable", "inconclusive")
                             if row.get(k))
        dur = f"{row['duration_s']:.0f} s" if isinstance(row.get("duration_s"), int | float) else ""
        self.detail[name] = "; ".join(x for x in (dur, verdicts, row.get("reason") or "") if x)
        self.update(1)

    # rendering -------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return {s: sum(1 for v in self.status.values() if v == s) for s in _ICON}

    def text(self) -> str:
        c = self.counts()
        total = len(self.names)
        finished = c["passed"] + c["failed"] + c["skipped"]
        pct = 100 if not total else round(100 * finished / total)
        lines = [f"{self.desc}: {finished}/{total} done ({pct} %): {c['passed']} passed, {c['failed']} failed"
                 + (f", {c['running']} running" if c["running"] else "")]
        lines += [f"  {_ICON[self.status[n]]} {n:32} {self.status[n]:8} {self.detail.get(n, '')}" for n in self.names]
        return "\n".join(lines)

    def _html(self, with_bar: bool = True) -> str:
        c = self.counts()
        total = len(self.names) or 1
        finished = c["passed"] + c["failed"] + c["skipped"]
        bar = (f"<progress value='{finished}' max='{total}' style='width:240px'></progress> "
               f"{finished}/{len(self.names)}") if with_bar else ""
        rows = "".join(
            f"<tr><td>{_ICON[self.status[n]]}</td><td>{esc(n)}</td><td>{esc(self.status[n])}</td>"
            f"<td>{esc(self.detail.get(n, ''))}</td></tr>" for n in self.names)
        return f"<div>{bar}<table class='k3snb-table'><tbody>{rows}</tbody></table></div>"

    def _bundle(self) -> dict[str, str]:
        return {"text/plain": self.text(), "text/html": self._html()}

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.n = self.n
            self._bar.refresh()
        elif self.mode == "widget":
            self._progress.value = sum(1 for v in self.status.values() if v in ("passed", "failed", "skipped"))
            self._table.value = self._html(with_bar=False)
        elif self._handle is not None:
            self._handle.update(self._bundle(), raw=True)


def _mode(enabled: bool) -> str:
    if not enabled:
        return "off"
    if "ipykernel" in sys.modules:
        from ..monitoring import frontend

        return "widget" if frontend() else "display"
    return "tqdm" if sys.stderr.isatty() else "lines"


def progress_view(names: list[str], enabled: bool = True, desc: str = "experiments") -> RunProgress:
    """The progress view for ``names`` (experiment cells), chosen for where the call runs."""
    return RunProgress(names, enabled, desc)
