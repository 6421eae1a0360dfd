"""Presentation: every result's ``_repr_html_`` goes through :mod:`k3snb.report._html`; the findings
report of runs (:func:`make_report`), the collection of runs (:func:`list_runs`) and plots
(:mod:`k3snb.report.plots`).

The flat API calls the report ``k3snb.make_report``: ``k3snb.report`` is this package.
"""

from ._html import Rich, Table, render, set_options

__all__ = ["Report", "Rich", "RunList", "RunSummary", "Table", "list_runs", "make_report", "render", "set_options"]


def __getattr__(name: str):
    # the report machinery (pandas, nbconvert) loads on first use: result classes import this package
    if name in ("make_report", "Report"):
        from . import _report

        return getattr(_report, name)
    if name == "RunSummary":
        from ._summary import RunSummary

        return RunSummary
    if name in ("list_runs", "RunList"):
        from . import _runs

        return getattr(_runs, name)
    raise AttributeError(f"module 'k3snb.report' has no attribute {name!r}")
