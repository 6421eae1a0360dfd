"""Blocker classification: match log lines against the signature catalogue (package data
``k3snb/data/signatures.yaml``) one line at a time, so arbitrarily large logs stream through."""

from __future__ import annotations

import gzip
import os
import re
import zlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import IO, Any

from ..errors import InvalidParameter, UsageError
from ..report import Rich, Table, render

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
        parsed = _sre_parse(pattern)
        items = list(parsed)
        if parsed.state.flags & re.IGNORECASE:  # an exact-case needle would hide matches
            return None
    except Exception:  # private parser API: fall back to always running the regex
        return None
    branches = [list(b) for b in items[0][1][1]] if len(items) == 1 and items[0][0] is _BRANCH else [items]
    out = tuple(_longest_literal(b) for b in branches)
    return out if all(len(n) >= 4 for n in out) else None


def _is_literal(pattern: str) -> bool:
    try:
        return all(op is _LITERAL for op, _ in _sre_parse(pattern))
    except Exception:  # private parser API: treat as a regex
        return False


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

_CHUNK = 4 << 20  # bytes read at a time
_MAX_LINE = 1 << 20  # longer lines are scanned in windows of this size: memory stays bounded
_MAX_TEXT = 64 << 10  # text kept of a match in a huge line (around the match)
_OVERLAP = 64 << 10  # windows of one long line overlap by this much: a match up to 64 KiB long across a seam is found


def _open(path: Path) -> IO[bytes]:
    if not path.exists():
        raise UsageError(f"log file {path} does not exist", hint="pass an existing log path, a string, or '-' for stdin")
    if path.is_dir():
        raise UsageError(f"{path} is a directory", hint="pass a log file (e.g. <data-dir>/k3s.log)")
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rb")
        return open(path, "rb")  # noqa: SIM115 - closed by _chunks
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}", hint="check the path and its permissions") from None


def _looks_like_path(s: str) -> bool:
    if "\n" in s:
        return False
    if os.path.exists(s):
        return True
    return not any(c.isspace() for c in s.strip()) and ("/" in s or s.endswith((".log", ".gz", ".txt")))


def _read_file(path: Path) -> Iterator[bytes]:
    with _open(path) as f:
        while True:
            try:
                data = f.read(_CHUNK)
            except (OSError, EOFError, zlib.error) as e:
                gz = path.suffix == ".gz"
                what = "is not a valid gzip file" if gz and not isinstance(e, OSError) or isinstance(
                    e, gzip.BadGzipFile) else "cannot be read"
                why = getattr(e, "strerror", None) or str(e) or type(e).__name__
                raise UsageError(
                    f"{path} {what}: {why}",
                    hint=("check the file is a complete gzip archive (gzip -t FILE), or pass the plain log"
                          if gz else "check the file and its permissions; copy it elsewhere if it is a special file"),
                ) from None
            if not data:
                return
            yield data


def _read_stream(stream: Any) -> Iterator[bytes]:
    stream = getattr(stream, "buffer", stream)  # a text stdin: read its bytes
    while True:
        data = stream.read(_CHUNK)
        if not data:
            return
        yield data.encode("utf-8", "replace") if isinstance(data, str) else data


def _read_lines(lines: Iterable) -> Iterator[bytes]:
    block: list[bytes] = []
    size = 0
    for line in lines:
        b = line if isinstance(line, bytes) else str(line).encode("utf-8", "replace")
        block.append(b.rstrip(b"\r\n"))
        size += len(b)
        if size >= _CHUNK:
            yield b"\n".join(block) + b"\n"
            block, size = [], 0
    if block:
        yield b"\n".join(block) + b"\n"


def _chunks(source: Source) -> Iterator[bytes]:
    """The source as a stream of byte chunks (whole lines are split on ``\\n`` later)."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_path(source)):
        yield from _read_file(Path(source))
    elif isinstance(source, str):
        data = source.encode("utf-8", "replace")
        for i in range(0, len(data), _CHUNK):
            yield data[i:i + _CHUNK]
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        for i in range(0, len(data), _CHUNK):
            yield data[i:i + _CHUNK]
    elif hasattr(source, "read"):
        yield from _read_stream(source)
    elif isinstance(source, Iterable):
        yield from _read_lines(source)
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


def _top_branches(pattern: str) -> list[str]:
    """``pattern`` split at its top-level ``|`` (outside groups, classes and escapes)."""
    out, cur, depth, esc, cls = [], [], 0, False, -1  # cls: chars seen inside [...], -1 outside
    for c in pattern:
        if esc:
            esc = False
        elif c == "\\":
            esc = True
        elif cls >= 0:
            cls = -1 if c == "]" and cls > 0 else cls + (c != "^" or cls > 0)
        elif c == "[":
            cls = 0
        elif c in "()":
            depth += 1 if c == "(" else -1
        elif c == "|" and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(c)
    out.append("".join(cur))
    return out


def _probes(s: Signature) -> list[tuple[str, re.Pattern | None]]:
    """(needle, test) pairs: a line holding the needle matches ``s`` when the test (a regex, or None for
    "the needle itself is the match") finds it. One pair per top-level branch when the branches split
    cleanly (only the branch whose needle occurs is run), else each needle with the whole regex."""
    whole = [(n, s.regex) for n in s.needles or ()]
    if s.pattern.startswith("(?") or len(whole) < 1:
        return whole  # global inline flags would not carry over to split branches
    branches = _top_branches(s.pattern)
    if len(branches) != len(whole):
        return whole
    out: list[tuple[str, re.Pattern | None]] = []
    for b, (n, _) in zip(branches, whole, strict=True):
        try:
            rx = re.compile(b)
        except re.error:
            return whole
        if needles(b) != (n,):
            return whole
        plain = _is_literal(b) and not any(c in n for c in '"\\')  # quote-free literal: the hit is the match
        out.append((n, None if plain else rx))
    return out


_NUMPY_MIN = 1 << 18  # below this many bytes, plain Python beats importing numpy (CLI start-up)


def _newlines(buf: bytes) -> list[int]:
    if len(buf) >= _NUMPY_MIN:
        import numpy as np

        return np.flatnonzero(np.frombuffer(buf, np.uint8) == 10).tolist()
    out, i = [], buf.find(b"\n")
    while i >= 0:
        out.append(i)
        i = buf.find(b"\n", i + 1)
    return out


def _lines_of(nl: list[int], starts: list[int]) -> list[int]:
    if len(starts) >= 4096:
        import numpy as np

        return np.searchsorted(nl, starts).tolist()
    return [bisect_left(nl, x) for x in starts]


class _Matcher:
    """Finds signature matches in chunks of whole lines. One Aho-Corasick pass over the raw bytes
    finds every literal needle (the speed of ``grep -F``); only the lines holding one are decoded,
    unescaped and tested with the regex branches owning the needles found."""

    def __init__(self, sigs: list[Signature]) -> None:
        import ahocorasick_rs

        self.sigs = sigs
        self.probes: list[tuple[int, re.Pattern | None]] = []  # (signature index, test), in catalogue order
        self.always_probes: set[int] = set()  # signatures without needles: tested on every line
        owners: dict[bytes, list[int]] = {}
        for i, s in enumerate(sigs):
            if s.needles is None:
                self.always_probes.add(len(self.probes))
                self.probes.append((i, s.regex))
            for n, test in _probes(s):
                # `\"` in the raw line is `"` after unescaping: search the needle's longest quote-free
                # piece, which occurs unchanged in the raw line whenever the needle is in the unescaped one
                piece = max(n.split('"'), key=len).encode()
                if piece:
                    owners.setdefault(piece, []).append(len(self.probes))
                else:  # a needle of quotes only: nothing to search for, test every line
                    self.always_probes.add(len(self.probes))
                self.probes.append((i, test))  # test None (quote-free literal) never has an empty piece
        self.pieces = list(owners)
        self.owners = [owners[p] for p in self.pieces]
        self.ac = ahocorasick_rs.BytesAhoCorasick(self.pieces) if self.pieces else None

    def scan(self, buf: bytes) -> tuple[list[tuple[int, str, Signature]], int]:
        """(line index in buf, line text, signature) for every match, in line order then catalogue order,
        and the number of newlines in ``buf``."""
        nl = _newlines(buf)  # newline offsets
        out: list[tuple[int, str, Signature]] = []
        cand: dict[int, set[int]] = {}
        if self.always_probes:
            cand = {li: set(self.always_probes) for li in range(len(nl) + (not buf.endswith(b"\n")))}
        if self.ac is not None:
            hits = self.ac.find_matches_as_indexes(buf, overlapping=True)
            if hits:
                lines = _lines_of(nl, [h[1] for h in hits])  # newlines before each hit = its line
                owners = self.owners
                for (pi, _, _), li in zip(hits, lines, strict=True):
                    got = cand.get(li)
                    if got is None:
                        cand[li] = set(owners[pi])
                    else:
                        got.update(owners[pi])
        sigs, probes, end = self.sigs, self.probes, len(buf)
        for li in sorted(cand):
            raw = buf[nl[li - 1] + 1 if li else 0:nl[li] if li < len(nl) else end].decode("utf-8", "replace")
            raw = raw.rstrip("\r")
            norm = _UNESCAPE.sub('"', raw) if "\\" in raw else raw
            last = -1
            for k in sorted(cand[li]):
                si, test = probes[k]
                if si != last and (test is None or test.search(norm)):
                    last = si
                    out.append((li, raw, sigs[si]))
        return out, len(nl)


@lru_cache(maxsize=8)
def _matcher(cat: Catalog, kinds: tuple[str, ...]) -> _Matcher:
    return _Matcher([s for s in cat.signatures if s.kind in kinds])  # built once per catalogue and kinds


def classify(source: Source, *, kinds: tuple[str, ...] = ("failure", "progress")) -> Classification:
    """Classify a log: ``source`` is log text, a path (``.gz`` too), an open stream, or an iterable of
    lines. Streams in chunks with bounded memory (a line longer than 1 MiB is scanned in overlapping
    windows); only matches are kept."""
    cat = load_catalog()
    matcher = _matcher(cat, tuple(kinds))
    matches: list[dict[str, Any]] = []

    def add(line_no: int, text: str, s: Signature) -> None:
        if len(text) > _MAX_TEXT:  # a window of a huge line: keep the part around the match
            m = s.regex.search(_UNESCAPE.sub('"', text))
            at = m.start() if m else 0
            text = "…" + text[max(0, at - _MAX_TEXT // 2):at + _MAX_TEXT // 2] + "…"
        matches.append({
            "line": line_no, "id": s.id, "kind": s.kind, "component": s.component, "stage": s.stage,
            "severity": s.severity, "root_cause": s.root_cause, "workarounds": list(s.workarounds),
            "text": text,
        })

    order = {id(s): i for i, s in enumerate(matcher.sigs)}
    done = 0  # complete lines before `pending`
    pending = b""  # the start of the current, unfinished line
    long: dict[str, tuple[str, Signature]] | None = None  # matches so far in the current huge line

    def window(buf: bytes) -> None:
        for _, text, s in matcher.scan(buf)[0]:
            long.setdefault(s.id, (text, s))  # type: ignore[union-attr]

    def end_long() -> None:  # the huge line is complete: its matches in catalogue order
        for text, s in sorted(long.values(), key=lambda ts: order[id(ts[1])]):  # type: ignore[union-attr]
            add(done + 1, text, s)

    for chunk in _chunks(source):
        buf = pending + chunk if pending else chunk
        cut = buf.rfind(b"\n") + 1
        if cut and long is not None:  # the huge line ends in this chunk: its last window
            end = buf.index(b"\n") + 1
            window(buf[:end])
            end_long()
            done, long = done + 1, None
            buf, cut = buf[end:], cut - end
        if cut:
            found, newlines = matcher.scan(buf[:cut] if cut < len(buf) else buf)
            for li, text, s in found:
                add(done + 1 + li, text, s)
            done += newlines
        pending = buf[cut:]
        if len(pending) > _MAX_LINE:  # a huge line: scan this window, keep only an overlap
            long = {} if long is None else long
            window(pending)
            pending = pending[-_OVERLAP:]
    if long is not None:
        window(pending)
        end_long()
        done += 1
    elif pending:  # a last line without a newline
        for _, text, s in matcher.scan(pending)[0]:
            add(done + 1, text, s)
        done += 1
    name = str(source) if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_path(source)) else ""
    return Classification(matches, done, cat, name)


class SignatureTable(Table):
    """The catalogue as a listing: one row per signature; ``table[id]`` is the :class:`Signature`."""

    _title_text = "k3snb signatures"
    _section = "signatures"

    def __init__(self, catalog: Catalog) -> None:
        super().__init__([s.record() for s in catalog.signatures])
        self.catalog = catalog

    def summary(self) -> dict[str, Any]:
        sigs = self.catalog.signatures
        return {"failures": sum(s.kind == "failure" for s in sigs), "progress": sum(s.kind == "progress" for s in sigs),
                "stages": len(self.catalog.stages)}

    def __getitem__(self, sig_id: str) -> Signature:
        return self.catalog.get(sig_id)


def list_signatures() -> SignatureTable:
    """All failure signatures and progress markers (``.to_frame()`` for a DataFrame)."""
    return SignatureTable(load_catalog())
