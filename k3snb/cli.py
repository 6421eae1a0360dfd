"""``k3snb`` command line: one subcommand per public function, each registered by its sub-package.

Sub-packages provide ``_cli.register(subparsers)``; handlers return an int exit code. They are
imported only when needed, and one that is missing or broken leaves a stub, so the rest still works.

Exit codes come from the error classes: ``UsageError`` → 2, other ``K3snbError`` → 1 (``exit_code``
attribute), Ctrl-C → 130.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from . import __version__
from .errors import K3snbError

# command -> module whose register() adds it (several commands may share one module)
COMMANDS: dict[str, str] = {
    "run": "k3snb.experiments._cli",
    "experiments": "k3snb.experiments._cli",
    "probe": "k3snb.probing._cli",
    "doctor": "k3snb.runners._cli",
    "trace": "k3snb.tracing._cli",
    "intercept": "k3snb.tracing._cli",
    "classify": "k3snb.signatures._cli",
    "cni": "k3snb.cni._cli",
    "k3s": "k3snb.k3s._cli",
}
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


def _unavailable(name: str, module: str, why: str):
    def handler(args: argparse.Namespace) -> int:
        print(f"error: `k3snb {name}` is not available in this build ({module}: {why})", file=sys.stderr)
        return 1

    return handler


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) just the parts needed for one command — keeps startup fast."""
    ap = argparse.ArgumentParser(
        prog="k3snb",
        description="Research kit for running k3s inside restricted sandboxes (gVisor, 9p roots, missing /proc/sys).",
        epilog="exit codes: 0 ok, 1 failure, 2 bad usage, 130 interrupted",
    )
    ap.add_argument("--version", action="version", version=f"k3snb {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    modules = dict.fromkeys([COMMANDS[only]] if only in COMMANDS else COMMANDS.values())
    for module in modules:
        names = [c for c, m in COMMANDS.items() if m == module]
        try:
            importlib.import_module(module).register(sub)
        except Exception as e:  # another layer not written yet (or broken): keep the CLI usable
            why = f"{type(e).__name__}: {e}".splitlines()[0][:120]
            for name in names:
                if name not in sub.choices:
                    p = sub.add_parser(name, help=f"(unavailable: {why})")
                    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
                    p.set_defaults(func=_unavailable(name, module, why))
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is threading.main_thread():
        # a shell starts background jobs with SIGINT ignored; `kill -INT` must still stop a run cleanly
        signal.signal(signal.SIGINT, signal.default_int_handler)
    first = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(first).parse_args(argv)
        func = getattr(args, "func", None)
        if func is None:
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        return int(func(args) or 0)
    except K3snbError as e:
        print(f"error: {e}", file=sys.stderr)  # str() carries the fields and the "fix:" hint
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
