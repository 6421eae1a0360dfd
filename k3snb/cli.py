"""``k3snb`` command line: one subcommand per public function, each registered by its sub-package.

Sub-packages provide ``_cli.register(subparsers)``; handlers return an int exit code. They are
imported only when needed (startup stays fast); common options come from :mod:`k3snb._cliopts`.

Every error is one ``error:`` line plus one ``fix:`` line, never a traceback: ``UsageError`` (and
argparse's own complaints) → 2, other ``K3snbError`` and unexpected exceptions → 1, Ctrl-C → 130.
``K3SNB_DEBUG=1`` adds the traceback of an unexpected exception.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from . import __version__
from ._cliopts import printable_lines
from .errors import K3snbError, UsageError

# command -> module whose register() adds it (several commands may share one module)
COMMANDS: dict[str, str] = {
    "run": "k3snb.experiments._cli",
    "experiments": "k3snb.experiments._cli",
    "worker": "k3snb.experiments._cli",
    "probe": "k3snb.probing._cli",
    "doctor": "k3snb._doctor",
    "trace": "k3snb.tracing._cli",
    "intercept": "k3snb.tracing._cli",
    "classify": "k3snb.signatures._cli",
    "cni": "k3snb.cni._cli",
    "k3s": "k3snb.k3s._cli",
    "workarounds": "k3snb.workarounds._cli",
    "report": "k3snb.report._cli", "runs": "k3snb.report._cli",
    "runtime": "k3snb.runtime._cli",
    "pod": "k3snb.pods._cli",
}
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class _ArgError(UsageError):
    """argparse's own complaint (unknown option, missing argument)."""


class _Parser(argparse.ArgumentParser):
    """argparse's usage complaints become a UsageError, printed as one error/fix pair by main()."""

    def error(self, message: str):  # type: ignore[override]
        raise _ArgError(message, hint=f"see `{self.prog} --help`")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) just the parts needed for one command — keeps startup fast."""
    ap = _Parser(
        prog="k3snb",
        description="Research kit for running k3s inside restricted sandboxes (gVisor, 9p roots, missing /proc/sys).",
        epilog="exit codes: 0 ok, 1 failure, 2 bad usage, 130 interrupted",
    )
    ap.add_argument("--version", action="version", version=f"k3snb {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    modules = dict.fromkeys([COMMANDS[only]] if only in COMMANDS else COMMANDS.values())
    for module in modules:
        try:
            mod = importlib.import_module(module)
        except ImportError as e:  # a broken install: say which part, no traceback
            raise K3snbError(f"cannot load the CLI module {module}: {e}",
                             hint="reinstall the kit (pip install -e .) or run `k3snb doctor`") from e
        mod.register(sub)
    return ap


def _clean(text: str) -> str:
    # error text may quote file content or names: never pass terminal escapes through
    return printable_lines(text)


def _report(msg: str, hint: str) -> None:
    print(f"error: {_clean(msg)}", file=sys.stderr)
    print(f"  fix: {_clean(hint)}", file=sys.stderr)


def _os_hint(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "check the permissions of the path (or run as root)"
    if isinstance(e, FileNotFoundError):
        return "check that the path exists"
    if e.errno == 28:  # ENOSPC
        return "free disk space and re-run"
    return "check the path and the system state named in the message"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is threading.main_thread():
        # a shell starts background jobs with SIGINT ignored; `kill -INT` must still stop a run cleanly
        signal.signal(signal.SIGINT, signal.default_int_handler)
    first = next((a for a in argv if not a.startswith("-")), None)
    cmd = "k3snb"
    try:
        args = build_parser(first).parse_args(argv)
        func = getattr(args, "func", None)
        if func is None:
            build_parser().print_help(sys.stderr)
            _report("no command given", "pick a COMMAND from the list above, e.g. `k3snb doctor`")
            return EXIT_USAGE
        cmd = f"k3snb {args.command}"
        return int(func(args) or 0)
    except K3snbError as e:
        if isinstance(e, _ArgError) and e.hint == "see `k3snb --help`" and first in COMMANDS:
            e.hint = f"see `k3snb {first} --help`"  # leftover arguments are reported by the top parser
        extra = ", ".join(f"{k}={v!r}" for k, v in e.fields.items() if v is not None)
        hint = e.hint or (f"see `{cmd} --help`" if e.exit_code == EXIT_USAGE else "see the message above")
        _report(e.msg + (f" ({extra})" if extra else ""), hint)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `k3snb ... | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 1
    except OSError as e:
        _report(f"`{cmd}`: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), _os_hint(e))
        _debug()
        return 1
    except Exception as e:  # the guard: a bug must still read as one error, not a traceback
        _report(f"unexpected {type(e).__name__} in `{cmd}`: {e}",
                "this is a k3snb bug: re-run with K3SNB_DEBUG=1 for the traceback and report it")
        _debug()
        return 1


def _debug() -> None:
    if os.environ.get("K3SNB_DEBUG"):
        import traceback

        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
