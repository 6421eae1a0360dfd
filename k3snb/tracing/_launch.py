"""Start the tracer process (``python -m k3snb.tracing``) locally or through a runner, and clean up.

Cancelling (KeyboardInterrupt in a cell, any exception, a timeout) SIGKILLs the tracer; the
kernel then kills the whole traced tree because every tracee carries ``PTRACE_O_EXITKILL``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._state import Record, make_tempdir
from ..errors import InvalidParameter, TraceError

Cmd = str | Sequence[str]


def tracer_argv(python: str | None = None) -> list[str]:
    """The command that starts the tracer (``python -m k3snb.tracing`` in effect), for any runner.

    It skips ``site``: .pth hooks of a full Jupyter venv cost ~40 ms per start, a large share of a
    short traced run; the tracer needs only the kit and python-ptrace, put on ``sys.path`` directly.
    """
    import importlib.util

    paths = []
    for mod in ("k3snb", "ptrace"):
        spec = importlib.util.find_spec(mod)
        if spec is None or spec.origin is None:
            raise TraceError(f"cannot locate the {mod!r} package", hint="pip install -e . in the kit's venv")
        root = os.path.dirname(os.path.dirname(spec.origin))
        if root not in paths:
            paths.append(root)
    boot = (f"import sys;sys.path[:0]={paths!r};import runpy;"
            "runpy.run_module('k3snb.tracing',run_name='__main__',alter_sys=True)")
    return [python or sys.executable, "-S", "-c", boot]


def argv_of(cmd: Cmd) -> list[str]:
    if isinstance(cmd, str):
        if not cmd.strip():
            raise InvalidParameter("empty command", hint="pass a shell string or an argv list")
        return ["/bin/sh", "-c", cmd]
    argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in cmd]
    if not argv:
        raise InvalidParameter("empty command", hint="pass a shell string or an argv list")
    return argv


class OutDir:
    """A tagged local directory holding a run's files; removed when the owner is collected."""

    def __init__(self, purpose: str, keep: str | os.PathLike | None = None) -> None:
        if keep is not None:
            self.path = Path(keep)
            self.path.mkdir(parents=True, exist_ok=True)
            self.record = None
        else:
            self.path = make_tempdir(purpose)
            self.record = Record(kind="tmp", id=self.path.name, paths=[str(self.path)]).save()

    def attach_to(self, owner: Any) -> None:
        if self.record is not None:
            # also reachable as owner._finalizer for an explicit close(); a killed kernel leaves the
            # record behind for `k3snb doctor --clean` (its owner pid is dead)
            owner._finalizer = weakref.finalize(owner, _remove, str(self.path), self.record)

    def remove(self) -> None:
        if self.record is not None:
            _remove(str(self.path), self.record)


def _remove(path: str, record: Record) -> None:
    shutil.rmtree(path, ignore_errors=True)
    record.drop()


def run_tracer(action: str, opts: list[str], cmd: list[str], *, runner=None, timeout: float | None = None,
               env: Mapping[str, str] | None = None, cwd: str | None = None, files: Path,
               input: str | bytes | None = None):
    """Run ``python -m k3snb.tracing ACTION OPTS -- CMD``; returns (RunResult, meta dict).

    ``files`` is a local directory; with a runner the tracer writes into the runner's workdir and
    the files are moved here afterwards (the workdir disappears with the runner).
    """
    from ..runners.base import RunResult

    if isinstance(runner, str):
        # a runner named here is ours: start it, run, and close it (files are moved out first)
        from ..runners import get_runner

        with get_runner(runner) as owned:
            return run_tracer(action, opts, cmd, runner=owned, timeout=timeout, env=env, cwd=cwd,
                              files=files, input=input)
    if runner is not None:
        stage = Path(runner.workdir) / files.name
        stage.mkdir(parents=True, exist_ok=True)
        for f in files.iterdir():  # inputs (rules.json) must be visible inside the runner
            shutil.copy2(f, stage / f.name)
        opts = [o.replace(str(files), str(stage)) for o in opts]
        args = [*tracer_argv(runner.python), action, *opts, "--", *cmd]
        try:
            res = runner.run(args, timeout=timeout, env=dict(env or {}) or None, cwd=cwd, input=input)
        finally:
            for f in stage.iterdir() if stage.exists() else ():
                shutil.move(str(f), str(files / f.name))
            shutil.rmtree(stage, ignore_errors=True)
        res.runner = res.runner or getattr(runner, "kind", "runner")
    else:
        args = [*tracer_argv(), action, *opts, "--", *cmd]
        full_env = dict(os.environ)
        full_env.update(env or {})
        t0 = time.monotonic()
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.Popen(args, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=cwd)
        timed_out = False
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()  # EXITKILL takes the traced tree with it
            out, err = proc.communicate()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        res = RunResult(args=args, returncode=proc.returncode, stdout=out.decode(errors="replace"),
                        stderr=err.decode(errors="replace"), duration=time.monotonic() - t0,
                        runner="local", timed_out=timed_out)
    meta_file = files / "meta.json"
    meta: dict = {}
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if meta.get("returncode") is not None and not res.timed_out:
            # the tracer saw the exact status; runners report a signal death as 128+N
            res.returncode = meta["returncode"]
    elif not res.timed_out and not res.sandbox_died:
        tail = "\n".join(res.stderr.strip().splitlines()[-5:])
        raise TraceError(f"the tracer did not run ({res.returncode}): {tail}",
                         hint="see the message above; `python -m k3snb.tracing probe` shows what ptrace can do here")
    return res, meta


def rule_opts(rules, files: Path) -> list[str]:
    from ._rules import Rule, save_rules

    rules = list(rules or [])
    for r in rules:
        if not isinstance(r, Rule):
            raise InvalidParameter(f"not a Rule: {r!r}", hint="build rules with k3snb.Rule.redirect(...) etc.")
    if not rules:
        return []
    return ["--rules", str(save_rules(files / "rules.json", rules))]
