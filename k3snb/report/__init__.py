"""Presentation: every result's ``_repr_html_`` goes through :mod:`k3snb.report._html`."""

from ._html import Rich, Table, render, set_options

__all__ = ["Rich", "Table", "render", "set_options"]
