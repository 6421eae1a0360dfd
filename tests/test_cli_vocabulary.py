"""One CLI vocabulary: every subcommand's options carry help text and the shared flags are spelled the
same everywhere (k3snb/_cliopts.py); usage errors of the real CLI are one error/fix pair."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from k3snb import cli
from k3snb._cliopts import seconds

# short option -> the only long option it may stand for
SHORT = {"-o": "--out", "-p": "--param", "-P": "--profile", "-r": "--runner"}
FORBIDDEN = {"--output": "--out", "--dest": "--out", "--params": "--param", "--runners": "--runner"}


def walk(parser: argparse.ArgumentParser, path: str = "k3snb"):
    """(command path, parser) for the parser and every sub-parser below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield from ((p, q) for p, q in walk(sub, f"{path} {name}"))
                assert helps.get(name), f"`{path} {name}` has no help line in `{path} --help`"


def all_parsers():
    return list(walk(cli.build_parser()))


def test_every_option_and_argument_has_help():
    missing = []
    for path, parser in all_parsers():
        for a in parser._actions:
            if isinstance(a, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
                continue
            if a.help == argparse.SUPPRESS:
                continue
            if not (a.help or "").strip():
                missing.append(f"{path} {'/'.join(a.option_strings) or a.dest}")
    assert not missing, "options without help text:\n  " + "\n  ".join(missing)


def test_shared_flags_have_one_spelling():
    wrong = []
    for path, parser in all_parsers():
        for a in parser._actions:
            opts = set(a.option_strings)
            for short, long in SHORT.items():
                if short in opts and long not in opts:
                    wrong.append(f"{path}: {short} must mean {long}, not {sorted(opts)}")
            for bad, good in FORBIDDEN.items():
                if bad in opts:
                    wrong.append(f"{path}: {bad} -> use {good}")
            if "--timeout" in opts and a.type not in (float, seconds):
                wrong.append(f"{path}: --timeout takes seconds (type=float or _cliopts.seconds)")
            if "--json" in opts and not isinstance(a, argparse._StoreTrueAction):
                wrong.append(f"{path}: --json is a switch")
    assert not wrong, "\n".join(wrong)


def test_the_vocabulary_is_used_where_it_applies():
    parsers = dict(all_parsers())

    def opts(path: str) -> set[str]:
        return {o for a in parsers[path]._actions for o in a.option_strings}

    assert {"--runner", "-r", "--runsc", "--profile", "-P", "--timeout"} <= opts("k3snb k3s start")
    assert {"--runner", "-r", "--runsc", "--out", "-o", "--json", "--timeout"} <= opts("k3snb probe")
    assert {"--param", "-p", "--out", "-o", "--runner", "--runsc", "--timeout"} <= opts("k3snb run")
    assert "--json" in opts("k3snb classify") and "--json" in opts("k3snb doctor")
    assert {"--runner", "--runsc", "--json"} <= opts("k3snb workarounds verify")


def kit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "k3snb", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def one_error(r: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert r.returncode == code, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("  fix: "), r.stderr
    assert needle in r.stderr, r.stderr


def test_probe_out_into_a_missing_folder_is_refused_before_probing(tmp_path):
    target = tmp_path / "no" / "such" / "probe.json"
    one_error(kit("probe", "-o", str(target)), 2, "folder")
    assert not (tmp_path / "no").exists()  # no silent mkdir
    one_error(kit("probe", "--out", str(tmp_path)), 2, "is a directory")
    one_error(kit("probe", "-o", "/proc/version"), 2, "cannot create files in /proc")


def test_probe_out_replaces_a_planted_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "p.json").symlink_to(victim)
    r = kit("probe", "-o", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "p.json").is_symlink() and '"kernel_release"' in (tmp_path / "p.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "victim"]  # no temp file left


@pytest.mark.parametrize("argv,needle", [
    (["probe", "--runsc", "2024"], "--runsc: the host runner ignores it"),
    (["probe", "--runner", "nosuch"], "unknown runner 'nosuch'"),
    (["k3s", "start", "--runsc", "2024"], "--runsc: the host runner ignores it"),
    (["k3s", "start", "-P", "nosuch"], "unknown profile 'nosuch'"),
    (["k3s", "start", "--runner", "gvisor:1999"], "unknown runsc build '1999'"),
    (["k3s", "start", "--flag=--a"], "--a"),
    (["k3s", "start", "--timeout", "-5"], "must be a positive number of seconds"),
    (["probe", "--timeout", "nan"], "must be a positive number of seconds"),
    (["k3s", "logs", "--tail", "-3"], "--tail"),
])
def test_usage_errors_exit_2_before_anything_starts(argv, needle):
    one_error(kit(*argv), 2, needle)


def test_workarounds_list_and_show():
    import json

    from k3snb.workarounds import list_workarounds

    r = kit("workarounds", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["id"] for x in r.stdout.splitlines()] == [row["id"] for row in list_workarounds().rows]
    r = kit("workarounds", "show", "W1")
    assert r.returncode == 0 and r.stdout.startswith("kmsg: ") and "fixes:      S06" in r.stdout, r.stdout
    one_error(kit("workarounds", "show", "nosuch"), 2, "nosuch")
    one_error(kit("workarounds", "apply", "kmsg", "-p", "nope=1"), 2, "no parameter(s) ['nope']")
    one_error(kit("workarounds", "verify", "kmsg", "--runsc", "2024"), 2, "--runsc: the host runner ignores it")


@pytest.mark.root
def test_workarounds_act_in_a_runner_and_leave_the_host_alone():
    from pathlib import Path

    before = Path("/proc/self/mountinfo").read_text()
    r = kit("workarounds", "revert", "kmsg", "propagation", "--runner", "host")
    assert r.returncode == 0, r.stdout + r.stderr
    steps = [ln.split()[:3] for ln in r.stdout.splitlines()]
    assert ["kmsg", "apply", "ok"] in steps and ["kmsg", "gone", "ok"] in steps
    assert ["propagation", "revert", "ok"] in steps
    r = kit("workarounds", "verify", "kmsg", "--runner", "host")
    assert r.returncode == 1 and r.stdout.split()[:3] == ["kmsg", "verify", "NO"]  # a fresh runner: not in effect
    assert Path("/proc/self/mountinfo").read_text() == before


@pytest.mark.parametrize("columns", ["60", "200"])
def test_doctor_prints_a_table_and_never_cuts_a_word(columns):
    import os

    from k3snb._doctor import doctor

    env = {**os.environ, "COLUMNS": columns}
    r = subprocess.run([sys.executable, "-m", "k3snb", "doctor"], capture_output=True, text=True, timeout=120,
                       env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert not r.stdout.startswith("<") and "<Doctor" not in r.stdout and "{'" not in r.stdout
    assert r.stdout.splitlines()[0].startswith("k3snb doctor: ")
    assert r.stdout.splitlines()[2].split() == ["COMPONENT", "STATUS", "VERSION", "PATH", "OR", "NOTE"]
    tokens = set(r.stdout.split())
    for row in doctor().installed:  # every word of every cell is printed whole (wrapped, not cut)
        for text in (row.get("version"), row.get("path") or row.get("note")):
            for word in (text or "").split():
                assert word in tokens, (word, r.stdout)


def test_missing_k3s_lists_the_searched_places_once():
    import os

    from k3snb import _capabilities as cap

    if cap.has_k3s():
        pytest.skip("a k3s binary is installed here")
    env = {k: v for k, v in os.environ.items() if k != "K3SNB_K3S"}
    r = subprocess.run([sys.executable, "-m", "k3snb", "k3s", "start"], capture_output=True, text=True, timeout=120,
                       env=env, stdin=subprocess.DEVNULL)
    one_error(r, 2, "no k3s binary found")
    assert r.stderr.count("k3s on PATH") == 1 and r.stderr.count("K3SNB_K3S (unset)") == 1, r.stderr
    assert "searched=" not in r.stderr


def test_experiments_listing_never_cuts_a_claim_id():
    from k3snb.experiments._registry import load_registry

    r = kit("experiments")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for e in load_registry().entries:
        assert any(ln.lstrip().startswith(e.id) for ln in lines), e.id
        for claim in e.claims:  # wrapped between ids, each id whole on one line
            assert any(claim in ln for ln in lines), (e.id, claim, r.stdout)


def test_pod_and_runtime_run_check_runner_and_runsc_like_every_other_command(tmp_path):
    """`pod run` (also with --keep) and `runtime run` refuse a bad runsc build, a --runsc the runner would
    ignore and a contradicting pair as one usage error, before any runner, record or pod exists."""
    import os

    from k3snb import InvalidParameter, Pod

    manifest = tmp_path / "pod.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: y}\nspec:\n  containers:\n"
                        "  - {name: c, image: busybox, command: [\"true\"]}\n")
    dirs = {n: tmp_path / n for n in ("state", "tmp")}
    for d in dirs.values():
        d.mkdir()
    env = {**os.environ, "K3SNB_STATE": str(dirs["state"]), "K3SNB_TMP": str(dirs["tmp"])}
    commands = {"pod run": lambda o: ["pod", "run", *o, str(manifest)],
                "pod run --keep": lambda o: ["pod", "run", "--keep", *o, str(manifest)],
                "runtime run": lambda o: ["runtime", "run", *o, "busybox", "--", "true"]}
    cases = [(["--runner", "gvisor", "--runsc", "2099"], "unknown runsc version '2099'"),
             (["--runsc", "2024"], "--runsc: the host runner ignores it"),
             (["--runner", "gvisor:2022", "--runsc", "2024"], "says runsc='2022' but the option says runsc='2024'")]
    for name, argv in commands.items():
        for opts, needle in cases:
            r = subprocess.run([sys.executable, "-m", "k3snb", *argv(opts)], capture_output=True, text=True,
                               timeout=120, env=env, stdin=subprocess.DEVNULL)
            assert "runner failed" not in r.stderr, (name, r.stderr)
            one_error(r, 2, needle)
    assert [p for d in dirs.values() for p in d.iterdir()] == []
    with pytest.raises(InvalidParameter, match="unknown runsc version '2099'"):  # the API: at once, not at start
        Pod(str(manifest), runner="gvisor", runsc="2099")
