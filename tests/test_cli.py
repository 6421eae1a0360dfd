"""The `k3snb` command: every subcommand answers --help, exit codes follow the error classes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from k3snb import cli
from k3snb.errors import ExperimentFailed

REG = Path(__file__).resolve().parent / "notebooks" / "experiments.yaml"


def k3snb_cmd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "k3snb", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_top_level_help_lists_every_command():
    r = k3snb_cmd("--help")
    assert r.returncode == 0
    for name in cli.COMMANDS:
        assert f"    {name}" in r.stdout


@pytest.mark.parametrize("name", list(cli.COMMANDS), ids=lambda n: f"{n}-help")  # a bare "k3s" id would match the k3s marker
def test_subcommand_help(name):
    r = k3snb_cmd(name, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: k3snb {name}")


def test_version_and_no_command():
    import k3snb

    r = k3snb_cmd("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"k3snb {k3snb.__version__}"
    r = k3snb_cmd()
    assert r.returncode == 2 and "usage: k3snb" in r.stderr
    assert r.stderr.splitlines()[-2:] == ["error: no command given",
                                          "  fix: pick a COMMAND from the list above, e.g. `k3snb doctor`"]


def test_experiments_lists_the_registry():
    r = k3snb_cmd("experiments", "--registry", str(REG))
    assert r.returncode == 0
    assert "10 experiments" in r.stdout and "04-needs-program" in r.stdout
    assert "skip: program 'k3snb-no-such-program' not on PATH" in r.stdout
    r = k3snb_cmd("experiments", "--registry", str(REG), "--json")
    import json

    assert [row["id"] for row in json.loads(r.stdout)][:2] == ["01-ok", "02-broken"]


def test_usage_error_exit_2_with_fix_hint(capsys):
    assert cli.main(["run", "--registry", str(REG), "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown experiment 'nope'") and "fix: list them with `k3snb experiments`" in err


def test_kit_error_exit_1(monkeypatch, capsys):
    from k3snb.experiments import _cli

    def fails(args):
        raise ExperimentFailed("it broke", hint="look at the log")

    monkeypatch.setattr(_cli, "_list", fails)
    assert cli.main(["experiments"]) == 1
    assert capsys.readouterr().err == "error: it broke\n  fix: look at the log\n"


def test_missing_subpackage_is_one_error_not_a_silent_stub(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "ghost", "k3snb.no_such_layer._cli")
    assert cli.main(["ghost", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load the CLI module k3snb.no_such_layer._cli")
    assert err.count("error:") == 1 and "\n  fix: " in err and "Traceback" not in err
    assert cli.main(["experiments", "--registry", str(REG)]) == 0  # other commands load only their own module


def test_unexpected_exception_is_one_error_line(monkeypatch, capsys):
    from k3snb.experiments import _cli

    def bug(args):
        raise KeyError("boom")

    monkeypatch.setattr(_cli, "_list", bug)
    assert cli.main(["experiments"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: unexpected KeyError in `k3snb experiments`: 'boom'",
                                "  fix: this is a k3snb bug: re-run with K3SNB_DEBUG=1 for the traceback and report it"]


@pytest.mark.parametrize("argv,msg", [
    (["nope"], "invalid choice: 'nope'"),
    (["classify"], "the following arguments are required"),
    (["experiments", "--bogus"], "unrecognized arguments: --bogus"),
    (["signatures", "extra"], "unrecognized arguments: extra"),
])
def test_argparse_errors_are_one_error_fix_pair_exit_2(argv, msg):
    r = k3snb_cmd(*argv)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and msg in lines[0], r.stderr
    assert lines[1].startswith("  fix: see `k3snb")
    if argv[0] in cli.COMMANDS:
        assert f"`k3snb {argv[0]} --help`" in lines[1]


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "k3snb"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usage: k3snb" in r.stdout
