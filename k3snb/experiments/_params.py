"""Notebook parameters: typing ``-p`` values and reading a ``parameters`` cell's names, types and defaults."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter

_SPECIAL = {"True": True, "False": False, "None": None, "true": True, "false": False, "null": None}


def resolve_value(text: str) -> Any:
    """Type a ``-p`` value: True/False/None, int, float, a ``[...]``/``{...}`` literal, else the string.

    Raises:
        InvalidParameter: the value starts like a list/dict but is not a valid literal.
    """
    if text in _SPECIAL:
        return _SPECIAL[text]
    for typ in (int, float):
        try:
            return typ(text)
        except ValueError:
            pass
    s = text.strip()
    if s[:1] in "[{":
        try:
            return json.loads(s)
        except ValueError:
            pass
        try:
            return ast.literal_eval(s)
        except (ValueError, SyntaxError):
            raise InvalidParameter(f"malformed list/dict value {text!r}",
                                   hint="""write JSON or a Python literal, e.g. -p configs='["default", "ultimate"]'"""
                                   ) from None
    return text


def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """``["n=3", "05:timeout=30"]`` → ``{"n": 3, "05:timeout": 30}`` (``ID:KEY`` targets one experiment)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidParameter(f"malformed parameter {item!r}: expected KEY=VALUE",
                                   hint="write -p name=value (or -p ID:name=value for one experiment)")
        out[key.strip()] = resolve_value(value)
    return out


@dataclass(frozen=True)
class Parameter:
    """One name assigned in a notebook's ``parameters`` cell."""

    name: str
    type: str  # annotation if given, else the literal's type (int, float, str, bool, list, dict, None)
    default: str  # source text of the default value
    help: str = ""  # the trailing ``# comment`` on its line

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "default": self.default, "help": self.help}


def _type_of(node: ast.expr, annotation: ast.expr | None, src: str) -> str:
    if annotation is not None:
        return ast.get_source_segment(src, annotation) or "?"
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return "expression"
    return "None" if value is None else type(value).__name__


def parameters_of_source(src: str) -> dict[str, Parameter]:
    """Names assigned at the top level of a parameters cell, read with ``ast`` (no line regexes)."""
    try:
        body = ast.parse(src).body
    except SyntaxError as e:
        raise InvalidParameter(f"the parameters cell is not valid Python: {e.msg} (line {e.lineno})") from None
    lines = src.splitlines()
    out: dict[str, Parameter] = {}
    for node in body:
        if isinstance(node, ast.Assign):
            targets, value, ann = node.targets, node.value, None
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value, ann = [node.target], node.value, node.annotation
        else:
            continue
        line = lines[node.end_lineno - 1] if node.end_lineno else ""
        tail = line[node.end_col_offset or 0:]
        help_ = tail.split("#", 1)[1].strip() if "#" in tail else ""
        above = node.lineno - 2  # or the comment lines right above the assignment
        comments: list[str] = []
        while not help_ and above >= 0 and lines[above].lstrip().startswith("#"):
            comments.insert(0, lines[above].lstrip()[1:].strip())
            above -= 1
        help_ = help_ or " ".join(comments)
        for t in targets:
            if isinstance(t, ast.Name):
                out[t.id] = Parameter(t.id, _type_of(value, ann, src),
                                      ast.get_source_segment(src, value) or "", help_)
    return out


def notebook_parameters(path: str | Path) -> dict[str, Parameter]:
    """The parameters a notebook declares in its cell tagged ``parameters`` (empty when it has none)."""
    # plain JSON: nbformat's schema validation costs seconds per notebook on a loaded machine
    try:
        nb = json.loads(Path(path).read_text())
        cells = nb["cells"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidParameter(f"cannot read notebook {path}: {e}", hint="pass a valid .ipynb file") from None
    for cell in cells:
        if cell.get("cell_type") == "code" and "parameters" in (cell.get("metadata") or {}).get("tags", []):
            src = cell.get("source", "")
            return parameters_of_source("".join(src) if isinstance(src, list) else src)
    return {}


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,),
          "dict": (dict,), "tuple": (list, tuple)}


def check_value(exp_id: str, p: Parameter, value: Any) -> Any:
    """``value`` typed for ``p``: a number given to a ``str`` parameter becomes its text (``-p runsc=2024``).

    Raises:
        InvalidParameter: a value that cannot stand in for the default (``n=abc`` for ``n = 3``); names
            the parameter, its type and an example.
    """
    ok = _TYPES.get(p.type)
    if p.type == "str" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if ok is None or value is None:
        return value  # expressions, None defaults, annotations we don't model: papermill's own typing applies
    if isinstance(value, bool) and p.type in ("int", "float"):
        ok = ()
    if not isinstance(value, ok):
        example = {"list": '\'["a", "b"]\'', "dict": "'{\"k\": 1}'", "bool": "True", "int": "3", "float": "2.5"}
        raise InvalidParameter(
            f"parameter {p.name!r} of {exp_id} is a {p.type} (default {p.default}); got {value!r}",
            hint=f"pass -p {p.name}={example.get(p.type, p.default)}")
    return value
