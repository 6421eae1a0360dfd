"""Interception rules compiled for the hot path: exact and subtree redirects, statfs and errno rules, quick rejects."""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Sequence

from . import _decode as D
from ._rules import Rule


class RuleSet:
    """The rules as lookup tables keyed by encoded path (and syscall number), built once per run."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        self.exact: dict[bytes, tuple[Rule, bytes]] = {}
        self.prefixes: dict[bytes, tuple[Rule, bytes]] = {}
        self.statfs_path: list[tuple[bytes, int]] = []
        self.statfs_type: dict[int, int] = {}
        self.errno_path: list[Rule] = []
        self.errno_nr: dict[int, int] = {}
        roots = set()
        for r in rules:
            if r.kind == "redirect":
                src = os.fsencode(r.path)
                (self.prefixes if r.subtree else self.exact)[src] = (r, os.fsencode(r.target))
                roots.add(src)
            elif r.kind == "statfs":
                if r.path:
                    self.statfs_path.append((os.fsencode(r.path), r.to_type))
                    roots.add(os.fsencode(r.path))
                else:
                    self.statfs_type[r.from_type] = r.to_type
            elif r.kind == "errno":
                code = getattr(_errno, r.errno)
                if r.path is None:
                    for n in D.resolve_syscalls(list(r.syscalls)):
                        self.errno_nr[n] = code
                else:
                    self.errno_path.append(r)
                    roots.add(os.fsencode(r.path))
        self.has_path_rules = bool(self.exact or self.prefixes or self.statfs_path or self.errno_path)
        # with exact-file rules only, a relative path can match only if its last component is a
        # rule's last component: most relative lookups (find, tar) skip the /proc readlink then
        self.only_exact = not self.prefixes and not self.statfs_path and not any(r.subtree for r in self.errno_path)
        self.leaves = {os.path.basename(p) for p in self.exact} | {
            os.path.basename(os.fsencode(r.path)) for r in self.errno_path} | {b".", b".."}
        # quick reject: a path can only match if it starts with one of these
        self.roots = tuple(sorted(roots))
        self.errno_path_nrs: dict[int, list[Rule]] = {}
        for r in self.errno_path:
            for n in D.resolve_syscalls(list(r.syscalls)) if r.syscalls else D.PATH_ARGS:
                self.errno_path_nrs.setdefault(n, []).append(r)

    def stop_nrs(self) -> set[int]:
        """Syscalls that must stop (seccomp RET_TRACE) for these rules to apply."""
        nrs: set[int] = set()
        if self.exact or self.prefixes or self.errno_path:
            nrs |= set(D.PATH_ARGS)
        if self.statfs_path or self.statfs_type:
            nrs |= {D.STATFS_NR, D.FSTATFS_NR}
        nrs |= set(self.errno_nr)
        return nrs

    def match_redirect(self, p: bytes) -> bytes | None:
        """The rewritten path for absolute path ``p``, or None (exact rules first, then the longest subtree)."""
        hit = self.exact.get(p)
        if hit is not None:
            return hit[1]
        if self.prefixes:
            q = p
            while q and q != b"/":
                hit = self.prefixes.get(q)
                if hit is not None:
                    return hit[1] + p[len(q):]
                q = q.rsplit(b"/", 1)[0]
            hit = self.prefixes.get(b"/")
            if hit is not None:
                return hit[1] + p
        return None
