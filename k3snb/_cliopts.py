"""The CLI's one flag vocabulary: every subcommand adds its common options through these helpers,
so ``--runner``, ``--runsc``, ``--out/-o``, ``--param/-p``, ``--profile/-P``, ``--json`` and
``--timeout`` mean the same thing (and carry help text) everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import UsageError

__all__ = ["add_runner", "add_runsc", "add_out", "add_param", "add_profile", "add_json", "add_timeout", "seconds",
           "check_out_parent", "write_out", "printable", "printable_lines", "text_table"]


def add_runner(p: argparse.ArgumentParser, *, default: str | None = "host", repeatable: bool = False,
               help: str | None = None) -> None:
    """``--runner/-r SPEC``: where the work runs (host, gvisor, gvisor:2024, ...)."""
    text = help or ("where it runs: host, gvisor, or gvisor:BUILD"
                    + (f" (default {default})" if default else ""))
    if repeatable:
        p.add_argument("--runner", "-r", action="append", dest="runners", metavar="SPEC",
                       help=text + "; repeatable")
    else:
        p.add_argument("--runner", "-r", default=default, metavar="SPEC", help=text)


def add_runsc(p: argparse.ArgumentParser, *, help: str | None = None) -> None:
    """``--runsc BUILD``: the runsc build for gVisor runners."""
    p.add_argument("--runsc", default=None, metavar="BUILD",
                   help=help or "runsc build for gVisor runners: 2022, 2024 or a path (default: the system runsc)")


def add_out(p: argparse.ArgumentParser, what: str, *, default: str | None = None, metavar: str = "FILE") -> None:
    """``--out/-o PATH``: where results go; its parent folder must exist (see check_out_parent)."""
    p.add_argument("--out", "-o", default=default, metavar=metavar,
                   help=what + (f" (default {default})" if default else ""))


def add_param(p: argparse.ArgumentParser, *, help: str | None = None) -> None:
    """``--param/-p KEY=VALUE`` (repeatable)."""
    p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help=help or "parameter KEY=VALUE (repeatable)")


def add_profile(p: argparse.ArgumentParser, *, default: str | None = None, help: str | None = None) -> None:
    """``--profile/-P NAME``."""
    p.add_argument("--profile", "-P", default=default, metavar="NAME",
                   help=(help or "profile name") + (f" (default {default})" if default else ""))


def add_json(p: argparse.ArgumentParser, *, help: str | None = None) -> None:
    """``--json``: machine-readable output on stdout."""
    p.add_argument("--json", action="store_true", help=help or "machine-readable JSON output on stdout")


def seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return v


def add_timeout(p: argparse.ArgumentParser, *, default: float | None = None, help: str | None = None) -> None:
    """``--timeout S`` (seconds)."""
    text = help or "seconds to wait before giving up"
    p.add_argument("--timeout", type=seconds, default=default, metavar="S",
                   help=text + (f" (default {default:g})" if default is not None else ""))


def check_out_parent(path: str | Path, *, option: str = "--out") -> Path:
    """Refuse an output path whose folder does not exist (no silent mkdir of parents)."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: folder {parent} does not exist",
                         hint=f"create it first (mkdir -p {parent}) or pass a path in an existing folder")
    if p.is_dir():
        raise UsageError(f"{option} {path} is a directory", hint="pass a file path")
    if p.exists() and not p.is_file():
        raise UsageError(f"{option} {path} is not a regular file", hint="pass a file path")
    try:  # can a file be created there at all (read-only fs, /proc, no permission)? ask now, not after the work
        import tempfile

        with tempfile.NamedTemporaryFile(dir=parent, prefix=".k3snb-probe-"):
            pass
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot create files in {parent} ({e.strerror})",
                         hint="pass a path in a writable folder") from None
    return p


def write_out(path: str | Path, text: str, *, option: str = "--out") -> Path:
    """Write ``text`` to ``path`` atomically: a private temp sibling (O_EXCL) renamed into place, so a
    reader never sees half a file and a planted symlink at ``path`` is replaced, not followed."""
    import os
    import tempfile

    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent if str(p.parent) else ".", prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"cannot write {option} {path}: {e.strerror}",
                         hint="free disk space, or pass a path in a writable folder") from None
    return p


def printable(text: str) -> str:
    """``text`` safe for a terminal: control and format characters (ESC of ANSI/OSC sequences, BEL,
    C1 controls, bidi overrides …) shown as ``\\xNN``/``\\uNNNN`` escapes; tabs kept."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\t" else (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")
                   for c in text)


def printable_lines(text: str) -> str:
    """:func:`printable` per line, keeping the line breaks."""
    return "\n".join(printable(line) for line in text.split("\n"))


def text_table(rows: list[dict], columns: list[tuple[str, str, int]], *, indent: str = "") -> str:
    """Rows as an aligned plain-text table. ``columns`` = (key, header, max width); a longer cell wraps
    onto more lines at spaces (a list-valued cell only between its items), never inside a word, id or
    path, so nothing is cut. The last column may be wider than its max when the terminal is."""
    import shutil
    import textwrap

    def cell(v) -> str:
        if v is None:
            return ""
        if isinstance(v, list | tuple):
            return ", ".join(map(str, v))
        return printable(str(v))

    cols = list(columns)
    widths = [min(w, max([len(h)] + [len(cell(r.get(k))) for r in rows])) for k, h, w in cols]
    used = len(indent) + sum(widths[:-1]) + 2 * (len(widths) - 1)
    widths[-1] = max(widths[-1], shutil.get_terminal_size((100, 24)).columns - used)
    out = [indent + "  ".join(h.upper().ljust(w) for (_, h, _), w in zip(cols, widths, strict=True)).rstrip()]
    def wrap(v, w: int) -> list[str]:
        if isinstance(v, list | tuple):  # a list wraps between its items only (an item may hold spaces)
            lines: list[str] = []
            cur = ""
            for i, item in enumerate(v):
                piece = printable(str(item)) + ("," if i < len(v) - 1 else "")
                if cur and len(cur) + 1 + len(piece) > w:
                    lines.append(cur)
                    cur = piece
                else:
                    cur = f"{cur} {piece}" if cur else piece
            return [*lines, cur] if cur else lines or [""]
        return textwrap.wrap(cell(v), w, break_long_words=False, break_on_hyphens=False) or [""]

    for r in rows:
        parts = [wrap(r.get(k), w) for (k, _, _), w in zip(cols, widths, strict=True)]
        for i in range(max(map(len, parts))):
            line = "  ".join((p[i] if i < len(p) else "").ljust(w) for p, w in zip(parts, widths, strict=True))
            out.append(indent + line.rstrip())
    return "\n".join(out)
