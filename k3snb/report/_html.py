"""HTML reprs for cell results, after xarray's: escaped, no JavaScript, a text fallback always
embedded, JupyterLab theme variables, CSS shipped as package data."""

from __future__ import annotations

import contextlib
import html
import uuid
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import resources
from typing import Any

_OPTIONS = {"display_style": "html", "max_rows": 60}


@contextlib.contextmanager
def _restore(old: dict) -> Iterator[None]:
    try:
        yield
    finally:
        _OPTIONS.update(old)


def set_options(**kw: Any):
    """Set display options globally, or for a ``with`` block: ``display_style`` ("html"|"text"), ``max_rows``."""
    unknown = set(kw) - set(_OPTIONS)
    if unknown:
        from ..errors import InvalidParameter

        raise InvalidParameter(f"unknown option(s) {sorted(unknown)}; valid: {sorted(_OPTIONS)}")
    old = {k: _OPTIONS[k] for k in kw}
    _OPTIONS.update(kw)
    return _restore(old)


@lru_cache(maxsize=1)
def _css() -> str:
    return resources.files("k3snb.report").joinpath("static/style.css").read_text()


def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _frame_html(df) -> str:
    n = _OPTIONS["max_rows"]
    shown = df if len(df) <= n else df.head(n)
    body = shown.to_html(escape=True, border=0, classes="k3snb-table", na_rep="")
    if len(df) > n:
        body += f"<div class='k3snb-more'>… {len(df) - n} more rows (use .to_frame())</div>"
    return body


def render(
    title: str,
    summary: dict[str, Any] | None = None,
    sections: Iterable[tuple[str, Any]] = (),
    text: str = "",
    collapsed_after: int = 12,
) -> str:
    """Render a result: a title line, summary key/values, then collapsible sections.

    Each section is ``(name, content)`` where content is a DataFrame, a dict, or a string (escaped).
    """
    if _OPTIONS["display_style"] == "text":
        return f"<pre>{esc(text or title)}</pre>"
    parts = [f"<style>{_css()}</style><div class='k3snb-wrap'>"]
    parts.append(f"<pre class='k3snb-text-fallback'>{esc(text or title)}</pre>")
    parts.append("<div class='k3snb-rich' hidden>")
    parts.append(f"<div class='k3snb-title'>{esc(title)}</div>")
    if summary:
        items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in summary.items())
        parts.append(f"<dl class='k3snb-summary'>{items}</dl>")
    for name, content in sections:
        n_items = None
        if hasattr(content, "to_html"):
            n_items = len(content)
            inner = _frame_html(content)
        elif isinstance(content, dict):
            n_items = len(content)
            inner = "<dl class='k3snb-summary'>" + "".join(
                f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in content.items()
            ) + "</dl>"
        else:
            inner = f"<pre>{esc(content)}</pre>"
        sid = f"k3snb-{uuid.uuid4().hex[:8]}"
        checked = "" if (n_items or 0) > collapsed_after else "checked"
        count = f" <span class='k3snb-count'>({n_items})</span>" if n_items is not None else ""
        parts.append(
            f"<div class='k3snb-section'><input id='{sid}' type='checkbox' class='k3snb-toggle' {checked}>"
            f"<label for='{sid}'>{esc(name)}{count}</label><div class='k3snb-body'>{inner}</div></div>"
        )
    parts.append("</div></div>")
    return "".join(parts)


class Rich:
    """Mixin for result types: ``to_frame()`` is required; repr, HTML and dict follow from it."""

    _title_text = "result"

    def to_frame(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "rows": self.to_frame().to_dict(orient="records")}

    def _repr_text(self) -> str:
        s = ", ".join(f"{k}={v}" for k, v in self.summary().items())
        return f"<{type(self).__name__} {s}>"

    def __repr__(self) -> str:
        return self._repr_text()

    def _repr_html_(self) -> str:
        return render(self._title_text, self.summary(), [("rows", self.to_frame())], text=self._repr_text())


class Table(Rich):
    """A result that is a list of row dicts (catalogues, listings). Subclasses name the column that
    identifies a row (``_key``, what iteration yields), optionally fix the column order, and say what
    the rows are (``_section``)."""

    _key = "id"
    _columns: tuple[str, ...] = ()
    _section = "rows"

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(self._columns) or None)

    def summary(self) -> dict[str, Any]:
        return {self._section: len(self.rows)}

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(r[self._key] for r in self.rows)

    def _repr_html_(self) -> str:
        return render(self._title_text, self.summary(), [(self._section, self.to_frame())], text=self._repr_text())
