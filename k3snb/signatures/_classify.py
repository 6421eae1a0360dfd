"""Blocker classification: match log lines against the signature catalogue (package data
``k3snb/data/signatures.yaml``) one line at a time, so arbitrarily large logs stream through."""

from __future__ import annotations

import gzip
import io
import os
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import IO, Any

from ..errors import InvalidParameter, UsageError
from ..report import Rich, render

try:  # the stdlib regex parser, to find literal prefilters (see needles())
    from re._constants import BRANCH as _BRANCH
    from re._constants import LITERAL as _LITERAL
    from re._parser import parse as _sre_parse
except ImportError:  # pragma: no cover - other interpreters
    _BRANCH = _LITERAL = object()

    def _sre_parse(pattern: str):
        raise ImportError

_FIELDS = ("id", "title", "pattern", "component", "stage")
_SEVERITIES = ("fatal", "error", "warning", "info")
# `\"`, `\\\"` … → `"`: err strings nested in klog/logrus quoting at any depth match plain-quote patterns
_UNESCAPE = re.compile(r'\\+"')


def _longest_literal(items) -> str:
    best = run = ""
    for op, av in items:
        if op is _LITERAL:
            run += chr(av)
            best = max(best, run, key=len)
        else:
            run = ""
    return best


def needles(pattern: str) -> tuple[str, ...] | None:
    """Literal substrings of which at least one must occur for ``pattern`` to match (one per top-level
    branch), or None when some branch has no literal of 4+ chars. A plain ``in`` test on these skips
    the regex for almost every line, which keeps classification of big logs fast."""
    try:
        items = list(_sre_parse(pattern))
    except Exception:  # private parser API: fall back to always running the regex
        return None
    branches = [list(b) for b in items[0][1][1]] if len(items) == 1 and items[0][0] is _BRANCH else [items]
    out = tuple(_longest_literal(b) for b in branches)
    return out if all(len(n) >= 4 for n in out) else None


@dataclass(frozen=True)
class Signature:
    id: str
    kind: str  # "failure" | "progress"
    title: str
    pattern: str
    regex: re.Pattern = field(compare=False, repr=False)
    component: str
    stage: str
    stage_order: int
    root_cause: str = ""
    workarounds: tuple[str, ...] = ()
    severity: str = "info"
    fatal: bool = False
    source: tuple[str, ...] = ()
    anchors: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    needles: tuple[str, ...] | None = None

    def matches(self, line: str) -> bool:
        if self.needles is not None and not any(n in line for n in self.needles):
            return False
        return self.regex.search(line) is not None

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "title": self.title, "component": self.component,
            "stage": self.stage, "severity": self.severity, "fatal": self.fatal,
            "root_cause": self.root_cause, "workarounds": list(self.workarounds),
            "source": list(self.source), "anchors": list(self.anchors), "pattern": self.pattern,
        }


@dataclass(frozen=True)
class Catalog:
    stages: tuple[tuple[str, str], ...]  # (id, label) in lifecycle order
    signatures: tuple[Signature, ...]

    def order(self, stage: str) -> int:
        return [s for s, _ in self.stages].index(stage)

    def label(self, stage: str | None) -> str | None:
        return dict(self.stages).get(stage) if stage else None

    def get(self, sig_id: str) -> Signature:
        for s in self.signatures:
            if s.id == sig_id:
                return s
        raise InvalidParameter(f"unknown signature id {sig_id!r}", hint="see k3snb.list_signatures() for the ids")


def _as_tuple(v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    return tuple(str(x) for x in (v if isinstance(v, list) else [v]))


def parse_catalog(data: dict, origin: str = "signatures.yaml") -> Catalog:
    """Validate and compile a catalogue mapping (the YAML's content)."""
    def bad(msg: str) -> InvalidParameter:
        return InvalidParameter(f"{origin}: {msg}", hint="fix the signature entry (see the file header)")

    if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
        raise bad("needs a 'stages' list")
    stages = tuple((str(s["id"]), str(s.get("label", s["id"]))) for s in data["stages"])
    stage_ids = [s for s, _ in stages]
    sigs: list[Signature] = []
    seen: set[str] = set()
    for kind, key in (("progress", "progress"), ("failure", "signatures")):
        for e in data.get(key) or []:
            missing = [f for f in _FIELDS if not e.get(f)]
            if missing:
                raise bad(f"entry {e.get('id', '?')} lacks {missing}")
            sid = str(e["id"])
            if sid in seen:
                raise bad(f"duplicate id {sid}")
            seen.add(sid)
            if e["stage"] not in stage_ids:
                raise bad(f"{sid}: unknown stage {e['stage']!r} (stages: {stage_ids})")
            sev = e.get("severity", "info")
            if sev not in _SEVERITIES:
                raise bad(f"{sid}: severity {sev!r} not in {_SEVERITIES}")
            try:
                rx = re.compile(e["pattern"])
            except re.error as err:
                raise bad(f"{sid}: bad pattern: {err}") from None
            sigs.append(
                Signature(
                    id=sid, kind=kind, title=str(e["title"]), pattern=e["pattern"], regex=rx,
                    component=str(e["component"]), stage=e["stage"], stage_order=stage_ids.index(e["stage"]),
                    root_cause=str(e.get("root_cause", "")), workarounds=_as_tuple(e.get("workarounds")),
                    severity=sev, fatal=bool(e.get("fatal", False)), source=_as_tuple(e.get("source")),
                    anchors=_as_tuple(e.get("anchors")), examples=_as_tuple(e.get("examples")),
                    needles=needles(e["pattern"]),
                )
            )
    return Catalog(stages, tuple(sigs))


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    import yaml

    text = resources.files("k3snb").joinpath("data/signatures.yaml").read_text()
    return parse_catalog(yaml.safe_load(text))


# --- input handling ---------------------------------------------------------------------------

Source = str | os.PathLike | IO | Iterable[str]


def _open(path: Path) -> IO[str]:
    if not path.exists():
        raise UsageError(f"log file {path} does not exist", hint="pass an existing log path, a string, or '-' for stdin")
    if path.is_dir():
        raise UsageError(f"{path} is a directory", hint="pass a log file (e.g. <data-dir>/k3s.log)")
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rt", encoding="utf-8", errors="replace")
        return open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed by _lines
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}", hint="check the path and its permissions") from None


def _looks_like_path(s: str) -> bool:
    if "\n" in s:
        return False
    if os.path.exists(s):
        return True
    return not any(c.isspace() for c in s.strip()) and ("/" in s or s.endswith((".log", ".gz", ".txt")))


def _lines(source: Source) -> Iterator[str]:
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_path(source)):
        with _open(Path(source)) as f:
            yield from f
    elif isinstance(source, str):
        yield from io.StringIO(source)
    elif isinstance(source, bytes):
        yield from io.StringIO(source.decode(errors="replace"))
    elif hasattr(source, "read") or isinstance(source, Iterable):
        for line in source:  # type: ignore[union-attr]
            yield line.decode(errors="replace") if isinstance(line, bytes) else line
    else:
        raise UsageError(
            f"cannot classify a {type(source).__name__}",
            hint="pass log text, a path, an open file/stream, or an iterable of lines",
        )


# --- result -----------------------------------------------------------------------------------

_COLUMNS = ["line", "id", "kind", "component", "stage", "severity", "root_cause", "workarounds", "text"]


@dataclass(repr=False)
class Classification(Rich):
    """Matches of one log: one row per (line, signature), plus the furthest lifecycle stage reached."""

    matches: list[dict[str, Any]]
    lines: int
    catalog: Catalog
    source: str = ""
    _title_text = "k3snb classify"

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.matches, columns=_COLUMNS)

    @property
    def failures(self):
        df = self.to_frame()
        return df[df["kind"] == "failure"].reset_index(drop=True)

    @property
    def progress(self):
        df = self.to_frame()
        return df[df["kind"] == "progress"].reset_index(drop=True)

    @property
    def ids(self) -> list[str]:
        """Failure signature ids in order of first appearance."""
        return list(dict.fromkeys(m["id"] for m in self.matches if m["kind"] == "failure"))

    @property
    def stages_reached(self) -> list[str]:
        """Stage ids reached, in lifecycle order (not log order)."""
        hit = {m["stage"] for m in self.matches if m["kind"] == "progress"}
        return [s for s, _ in self.catalog.stages if s in hit]

    @property
    def furthest_stage(self) -> str | None:
        reached = self.stages_reached
        return reached[-1] if reached else None

    @property
    def first_fatal(self) -> dict[str, Any] | None:
        fatal = {s.id for s in self.catalog.signatures if s.fatal}
        return next((m for m in self.matches if m["id"] in fatal), None)

    @property
    def blocked(self) -> bool:
        return self.first_fatal is not None

    @property
    def blocked_at(self) -> str | None:
        """The lifecycle stage the first fatal failure stops (None when nothing fatal matched)."""
        ff = self.first_fatal
        return ff["stage"] if ff else None

    @property
    def workarounds(self) -> list[str]:
        """W ids suggested by the failures, in order of first appearance."""
        return list(dict.fromkeys(w for m in self.matches if m["kind"] == "failure" for w in m["workarounds"]))

    def blockers(self):
        """Failures aggregated per signature: count, first/last line, workarounds."""
        import pandas as pd

        rows: dict[str, dict[str, Any]] = {}
        for m in self.matches:
            if m["kind"] != "failure":
                continue
            r = rows.setdefault(m["id"], {"id": m["id"], "count": 0, "first_line": m["line"], "stage": m["stage"],
                                          "component": m["component"], "severity": m["severity"],
                                          "workarounds": m["workarounds"], "root_cause": m["root_cause"]})
            r["count"] += 1
            r["last_line"] = m["line"]
        cols = ["id", "count", "first_line", "last_line", "stage", "component", "severity", "workarounds", "root_cause"]
        return pd.DataFrame(list(rows.values()), columns=cols)

    def summary(self) -> dict[str, Any]:
        ff = self.first_fatal
        return {
            "lines": self.lines,
            "matches": len(self.matches),
            "blockers": ",".join(self.ids) or "none",
            "furthest_stage": self.catalog.label(self.furthest_stage) or "none",
            "first_fatal": f"{ff['id']} (line {ff['line']})" if ff else "none",
            "blocked_at": self.catalog.label(self.blocked_at) or "none",
            "workarounds": ",".join(self.workarounds) or "none",
        }

    def _repr_text(self) -> str:
        s = self.summary()
        return (f"<Classification {s['lines']} lines, {s['matches']} matches, furthest stage: "
                f"{s['furthest_stage']}, blockers: {s['blockers']}>")

    def _repr_html_(self) -> str:
        import pandas as pd

        stages = pd.DataFrame(
            [{"stage": label, "reached": sid in self.stages_reached} for sid, label in self.catalog.stages]
        )
        return render(self._title_text, self.summary(),
                      [("blockers", self.blockers()), ("stages", stages), ("matches", self.to_frame())],
                      text=self._repr_text())


_BLOCK = 4096  # lines per scan block: bounded memory for any log size


class _Matcher:
    """Finds signature matches in blocks of lines: each literal needle is searched once per block
    (a C-speed substring scan), and only the lines containing it run the signature's regex."""

    def __init__(self, sigs: list[Signature]) -> None:
        self.always = [i for i, s in enumerate(sigs) if s.needles is None]
        self.by_needle: dict[str, list[int]] = {}
        for i, s in enumerate(sigs):
            for n in s.needles or ():
                self.by_needle.setdefault(n, []).append(i)
        self.sigs = sigs

    def block(self, lines: list[str]) -> Iterator[tuple[int, Signature]]:
        """(index in block, signature) for every match, in line order then catalogue order."""
        text = "\n".join(lines)
        starts = [0]
        for ln in lines[:-1]:
            starts.append(starts[-1] + len(ln) + 1)
        cand: dict[int, set[int]] = {}
        for needle, idx in self.by_needle.items():
            pos = text.find(needle)
            while pos != -1:
                li = bisect_right(starts, pos) - 1
                cand.setdefault(li, set()).update(idx)
                pos = text.find(needle, starts[li + 1] if li + 1 < len(starts) else len(text))
        if self.always:
            for li in range(len(lines)):
                cand.setdefault(li, set()).update(self.always)
        for li in sorted(cand):
            for si in sorted(cand[li]):
                if self.sigs[si].regex.search(lines[li]):
                    yield li, self.sigs[si]


def classify(source: Source, *, kinds: tuple[str, ...] = ("failure", "progress")) -> Classification:
    """Classify a log: ``source`` is log text, a path (``.gz`` too), an open stream, or an iterable of
    lines. Streams in blocks of lines; only matches are kept."""
    cat = load_catalog()
    matcher = _Matcher([s for s in cat.signatures if s.kind in kinds])
    matches: list[dict[str, Any]] = []
    n = 0

    def flush(raw: list[str], first: int) -> None:
        norm = [_UNESCAPE.sub('"', ln) if "\\" in ln else ln for ln in raw]
        for li, s in matcher.block(norm):
            matches.append({
                "line": first + li, "id": s.id, "kind": s.kind, "component": s.component, "stage": s.stage,
                "severity": s.severity, "root_cause": s.root_cause, "workarounds": list(s.workarounds),
                "text": raw[li],
            })

    block: list[str] = []
    for n, line in enumerate(_lines(source), 1):  # noqa: B007 - n is the line count afterwards
        block.append(line.rstrip("\r\n"))
        if len(block) == _BLOCK:
            flush(block, n - len(block) + 1)
            block = []
    if block:
        flush(block, n - len(block) + 1)
    name = str(source) if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_path(source)) else ""
    return Classification(matches, n, cat, name)


@dataclass(repr=False)
class SignatureTable(Rich):
    catalog: Catalog
    _title_text = "k3snb signatures"

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([s.record() for s in self.catalog.signatures])

    def summary(self) -> dict[str, Any]:
        sigs = self.catalog.signatures
        return {"failures": sum(s.kind == "failure" for s in sigs), "progress": sum(s.kind == "progress" for s in sigs),
                "stages": len(self.catalog.stages)}

    def __getitem__(self, sig_id: str) -> Signature:
        return self.catalog.get(sig_id)

    def __len__(self) -> int:
        return len(self.catalog.signatures)


def list_signatures() -> SignatureTable:
    """All failure signatures and progress markers (``.to_frame()`` for a DataFrame)."""
    return SignatureTable(load_catalog())
