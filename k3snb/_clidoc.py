"""The README's CLI reference, generated from the parser: every command's ``--help`` text.

``python -m k3snb._clidoc`` prints the section; ``python -m k3snb._clidoc --write README.md`` replaces
the part between the markers (tests/test_cli_reference.py checks it matches ``--help``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

START, END = "<!-- cli-reference:start (generated: python -m k3snb._clidoc --write README.md) -->", \
    "<!-- cli-reference:end -->"
WIDTH = "100"  # help is wrapped to the terminal: fix the width so the text is reproducible


def parsers(parser: argparse.ArgumentParser | None = None) -> Iterator[argparse.ArgumentParser]:
    """The top parser and every sub-parser below it, depth first, in registration order."""
    if parser is None:
        from .cli import build_parser

        parser = build_parser()
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for sub in action.choices.values():
                if id(sub) not in seen:  # aliases share one parser
                    seen.add(id(sub))
                    yield from parsers(sub)


def help_text(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        return parser.format_help()
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def markdown() -> str:
    """The section between the markers (markers included)."""
    out = [START, "", "## CLI reference", "",
           "Every command and its options, as `--help` prints them (exit codes: 0 ok, 1 failure, 2 bad usage, "
           "130 interrupted; every error is one `error:` line and one `fix:` line).", ""]
    for p in parsers():
        out += [f"### `{p.prog}`", "", "```text", help_text(p).rstrip("\n"), "```", ""]
    out.append(END)
    return "\n".join(out)


def replace_section(text: str, section: str) -> str:
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        return before + section + after
    return text.rstrip("\n") + "\n\n" + section + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m k3snb._clidoc", description=__doc__.splitlines()[0])
    ap.add_argument("--write", metavar="FILE", help="replace the CLI reference section of FILE (e.g. README.md)")
    a = ap.parse_args(argv)
    section = markdown()
    if a.write:
        path = Path(a.write)
        path.write_text(replace_section(path.read_text(), section))
    else:
        sys.stdout.write(section + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
