"""Interception rules: what to rewrite, as data that survives JSON (for ``--rules rules.json``).

Four kinds:

* ``redirect`` — a path is replaced by ``target`` in every path-taking syscall, like a bind mount:
  a directory redirects its whole subtree (matched on ``/`` boundaries), a file just itself.
  Whether the source is a directory is looked up where the tracer runs (inside a runner: there),
  when the rule is given as ``prefix=None``; a trailing ``/`` forces a subtree. Targets resolve in
  the *tracee's* mount namespace.
* ``fake``     — an exact path reads ``content``; the tracer materialises the file and redirects.
* ``statfs``   — statfs/fstatfs report ``to`` as ``f_type``: for paths under ``path``, or whenever
  the real type is ``from_type`` (e.g. 9p -> ext4).
* ``errno``    — matching syscalls fail with ``errno`` without running (by path and/or syscall).
"""

from __future__ import annotations

import errno as _errno
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import InvalidParameter
from ._decode import FSTYPES, resolve_syscalls

Kind = Literal["redirect", "fake", "statfs", "errno"]
_KINDS = ("redirect", "fake", "statfs", "errno")


def _fstype(v: str | int | None, what: str) -> int | None:
    if v is None or isinstance(v, int):
        return v
    s = str(v).strip().lower()
    if s in FSTYPES:
        return FSTYPES[s]
    try:
        return int(s, 16) if s.startswith("0x") else int(s, 16 if any(c in s for c in "abcdef") else 10)
    except ValueError:
        raise InvalidParameter(
            f"unknown filesystem type {v!r} for {what}",
            hint=f"use a name ({', '.join(sorted(FSTYPES))}) or a hex magic such as 0xEF53",
        ) from None


def _norm(path: str, what: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidParameter(
            f"{what} must be an absolute path, got {path!r}",
            hint="write paths as the traced program sees them, e.g. /proc/sys/kernel/panic",
        )
    return os.path.normpath(path)


@dataclass(frozen=True)
class Rule:
    """One interception rule. Build with the class methods; ``Rule.redirect('/proc/sys', '/fake')``."""

    kind: Kind
    path: str | None = None
    target: str | None = None
    prefix: bool | None = None  # redirect: None = subtree if the source is a directory (see subtree)
    content: str | None = None
    to_type: int | None = None
    from_type: int | None = None
    errno: str | None = None
    syscalls: tuple[str, ...] | None = None
    note: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InvalidParameter(f"unknown rule kind {self.kind!r}; valid: {', '.join(_KINDS)}",
                                   hint="use Rule.redirect / Rule.fake / Rule.statfs / Rule.errno")
        if self.kind in ("redirect", "fake") and not self.path:
            raise InvalidParameter(f"a {self.kind} rule needs a path", hint="pass the path to rewrite")
        if self.kind == "redirect" and not self.target:
            raise InvalidParameter("a redirect rule needs a target", hint="Rule.redirect(src, dst)")
        if self.kind == "statfs" and self.to_type is None:
            raise InvalidParameter("a statfs rule needs to_type", hint="Rule.statfs('ext4', from_type='9p')")
        if self.kind == "statfs" and self.path is None and self.from_type is None:
            raise InvalidParameter("a statfs rule needs path= or from_type=",
                                   hint="Rule.statfs('ext4', from_type='9p') spoofs every 9p mount")
        if self.kind == "errno":
            if self.errno not in _errno.errorcode.values():
                raise InvalidParameter(f"unknown errno {self.errno!r}", hint="use a name such as EACCES or EPERM")
            if self.path is None and not self.syscalls:
                raise InvalidParameter("an errno rule needs path= or syscalls=",
                                       hint="Rule.errno('EPERM', syscalls=['unshare'])")
        if self.syscalls:
            resolve_syscalls(list(self.syscalls))  # validates names now, not in the tracer

    # -- constructors ------------------------------------------------------------------------------
    @classmethod
    def redirect(cls, path: str, target: str, *, prefix: bool | None = None, note: str = "") -> Rule:
        """Rewrite ``path`` to ``target``: its whole subtree when it is a directory (or ends with ``/``),
        else just the file. ``prefix=True/False`` forces subtree / exact-path matching."""
        pre = True if prefix is None and path.endswith("/") else prefix
        return cls("redirect", path=_norm(path, "redirect source"), target=_norm(target, "redirect target"),
                   prefix=pre, note=note)

    @classmethod
    def fake(cls, path: str, content: str | bytes, *, note: str = "") -> Rule:
        """Make ``path`` read as ``content`` (a newline is added if missing, like /proc files)."""
        if isinstance(content, bytes):
            content = content.decode()
        if content and not content.endswith("\n"):
            content += "\n"
        return cls("fake", path=_norm(path, "fake path"), content=content, note=note)

    @classmethod
    def statfs(cls, to: str | int = "ext4", *, from_type: str | int | None = None,
               path: str | None = None, note: str = "") -> Rule:
        """Report ``to`` as f_type for statfs/fstatfs of ``path`` (prefix) or of any ``from_type`` fs."""
        return cls("statfs", path=_norm(path, "statfs path") if path else None, prefix=True,
                   to_type=_fstype(to, "to"), from_type=_fstype(from_type, "from_type"), note=note)

    @classmethod
    def fail(cls, errno: str, *, path: str | None = None, syscalls: Sequence[str] | None = None,
             prefix: bool = False, note: str = "") -> Rule:
        """Make matching syscalls fail with ``errno`` (name, e.g. "EACCES") without running them."""
        return cls("errno", path=_norm(path, "errno path") if path else None, prefix=prefix,
                   errno=errno, syscalls=tuple(syscalls) if syscalls else None, note=note)

    # -- JSON ----------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v is not None and v != ""}
        d["kind"] = self.kind
        if self.syscalls:
            d["syscalls"] = list(self.syscalls)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Rule:
        if not isinstance(d, dict) or "kind" not in d:
            raise InvalidParameter(f"not a rule: {d!r}", hint="each rule is an object with a 'kind' key")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise InvalidParameter(f"unknown rule field(s) {sorted(unknown)}; valid: {sorted(known)}",
                                   hint="write rules with Rule.to_json / save_rules")
        d = dict(d)
        if d.get("syscalls"):
            d["syscalls"] = tuple(d["syscalls"])
        for k in ("to_type", "from_type"):
            if k in d:
                d[k] = _fstype(d[k], k)
        return cls(**d)

    @property
    def subtree(self) -> bool:
        """True when paths under ``path`` match too (``prefix``, or auto: ``path`` is a directory here)."""
        if self.prefix is not None:
            return self.prefix
        return self.kind == "redirect" and os.path.isdir(self.path)

    def matches(self, path: str) -> bool:
        p = self.path
        if p is None:
            return True
        if path == p:
            return True
        return self.subtree and (p == "/" or path.startswith(p + "/"))

    def rewrite(self, path: str) -> str:
        """The target for ``path`` (which must match)."""
        assert self.target is not None
        if path == self.path or not self.subtree:
            return self.target
        return self.target + path[len(self.path):] if self.path != "/" else self.target + path


def save_rules(path: str | os.PathLike, rules: Iterable[Rule]) -> Path:
    """Write rules as JSON for ``python -m k3snb.tracing intercept --rules FILE``; returns the path."""
    p = Path(path)
    p.write_text(json.dumps({"rules": [r.to_json() for r in rules]}, indent=1))
    return p


def load_rules(path: str | os.PathLike) -> list[Rule]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise InvalidParameter(f"rules file {str(p)!r} not found", hint="write it with k3snb.tracing.save_rules") from None
    except OSError as e:
        raise InvalidParameter(f"cannot read rules file {str(p)!r}: {e.strerror or e}",
                               hint="pass a rules JSON file written by k3snb.tracing.save_rules") from None
    except ValueError as e:
        raise InvalidParameter(f"rules file {str(p)!r} is not JSON: {e}", hint="write it with save_rules") from None
    items = data.get("rules") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InvalidParameter(f"rules file {str(p)!r} holds no rule list", hint='expected {"rules": [...]}')
    return [Rule.from_json(d) for d in items]


def parse_redirect(spec: str) -> Rule:
    """CLI form ``SRC=DST``: SRC's subtree when it is a directory (or ends with ``/``), else the file."""
    if "=" not in spec:
        raise InvalidParameter(f"--redirect wants SRC=DST, got {spec!r}", hint="e.g. --redirect /proc/sys=/tmp/fake")
    src, dst = spec.split("=", 1)
    return Rule.redirect(src, dst)


def parse_statfs(spec: str) -> Rule:
    """CLI form ``FROM=TO`` (types, e.g. ``9p=ext4``) or ``/path=TO``."""
    if "=" not in spec:
        raise InvalidParameter(f"--statfs wants FROM=TO, got {spec!r}", hint="e.g. --statfs 9p=ext4")
    frm, to = spec.split("=", 1)
    if frm.startswith("/"):
        return Rule.statfs(to, path=frm)
    return Rule.statfs(to, from_type=frm)
