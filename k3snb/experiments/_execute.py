"""The run loop: cells into worker processes (here, or on a Dask cluster), rows into one summary."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _state
from .._paths import tmp_root
from .._procfs import descendants
from ..errors import InvalidParameter
from ..report._summary import VERDICTS, RunSummary
from . import _procs
from ._files import Reserve, RunStorageError, is_storage_error, storage_error, write_atomic
from ._kernel import KERNEL_NAME, START_TIMEOUT, ensure_kernel, kit_env
from ._params import notebook_parameters, parse_params  # noqa: F401 (re-exported for callers)
from ._plan import Cell, parse_spec, plan, prepare_out
from ._registry import default_registry

__all__ = ["KERNEL_NAME", "ensure_kernel", "run_experiments"]

KIT_DIR = ".k3snb-kit"  # tagged name: `k3snb doctor --clean` may remove it after a kill -9
NOT_RUN = "not run: the run ended before this cell"
RUNNERS_LOG = ".runners.jsonl"


class _Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, delivered like Ctrl-C so the same cleanup runs."""


def _on_signal(signum, frame):
    raise _Interrupted(signal.Signals(signum).name)


@dataclass
class RunContext:
    """What every cell of one run shares."""

    run_dir: Path
    run_id: str
    kernel: str
    timeout: float | None
    env: dict[str, str]
    record: _state.Record
    in_place: bool = False
    scratch: str | None = None  # a Dask worker's private copy of the run: removed if the worker dies
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


def run_experiments(
    ids: Iterable[str] | str | None = None,
    params: Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    runners: Iterable[str] | str | None = None,
    runsc: str | os.PathLike | None = None,
    *,
    matrix: Mapping[str, Any] | None = None,
    repeat: int = 1,
    workers: int = 1,
    scheduler: str | None = None,
    timeout: float | None = None,
    registry: str | os.PathLike | None = None,
    in_place: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Execute experiment notebooks with papermill into one run folder and summarise them.

    Args:
        ids: experiment ids or NN prefixes (default: all). Naming one whose root/runsc requirement is
            missing is an error; unnamed ones are skipped with the reason.
        params: ``{name: value}`` injected into every selected notebook that declares ``name``;
            ``{"ID:name": value}`` targets one experiment. Lists and dicts are passed as they are.
        out: run folder (default ``runs/<UTC timestamp>``; must be new or empty).
        runners: runner specs (``host``, ``gvisor``, ``gvisor:2024``, ``gvisor:2024:ptrace``); each
            selected notebook receives one as its ``runner`` parameter. Default: its first listed runner.
        runsc: runsc build (``"2022"``, ``"2024"`` or a path) for every gvisor cell.
        matrix: sweep axes ``{"runsc": ["2022", "2024"], "platform": [...], "runner": [...], "<param>": [...]}``;
            every combination is one cell per experiment.
        repeat: run every cell this many times (a ``repeat`` column tells them apart).
        workers: cells run side by side on this machine.
        scheduler: ``tcp://HOST:PORT`` of a Dask distributed scheduler: cells run on its workers.
        timeout: seconds for each whole notebook (default: the registry's), not per cell.
        registry: registry YAML (default: the packaged one or ``$K3SNB_REGISTRY``).
        in_place: copy each passed notebook back over its source (``make notebooks``).
        progress: show a tqdm progress bar.

    Each cell runs in its own worker process with its own kernel, so a dead kernel, a crashed gVisor
    sandbox or a hung cell costs one cell. Every process a cell starts inherits ``K3SNB_RUN_TAG`` and
    whatever still carries it when the cell ends is killed; the worker dies with the run. Jupyter,
    IPython and matplotlib state lives in ``<run>/.k3snb-kit`` (removed at the end), never under ``$HOME``.

    Run folder layout::

        runs/<UTC timestamp>/
          run.json                      environment facts, the planned cells, kit version
          summary.json  summary.csv     one row per cell (passed | failed | skipped, axes, verdict counts)
          <cell>/<notebook>.ipynb       the executed notebook (partial, with the error cell, on failure)
          <cell>/results.json           record()/verdict() output ($K3SNB_RESULTS)
          <cell>/log.txt                papermill log with cell output

    Returns:
        RunSummary: one row per cell; ``.exit_code`` is 0 when nothing failed.

    Raises:
        UsageError: unknown id/runner/parameter/axis, malformed value, unwritable or taken ``out``, an
            option a selected experiment can't honour, a named experiment needing root or runsc that
            is missing — before anything is created.
        RunStorageError: the run folder filled up; the last summary written stays valid and lists
            every cell (those not run as skipped).
        KeyboardInterrupt: Ctrl-C, SIGTERM or SIGHUP, after cleaning up; the partial summary is written first.
    """
    if timeout is not None and not timeout > 0:
        raise InvalidParameter(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InvalidParameter(f"workers must be a positive integer, got {workers!r}", hint="pass --workers 2")
    if scheduler is not None and workers != 1:
        raise InvalidParameter("--workers is for cells on this machine; with --scheduler the cluster's workers run them",
                               hint="drop --workers, or start more `k3snb worker` processes")
    if scheduler is not None:
        from ._dask import check_scheduler

        check_scheduler(scheduler)
    cells = plan(ids, params, runners, runsc, registry, matrix, repeat, here=scheduler is None)
    kernel = ensure_kernel() if any(c.skip is None for c in cells) else KERNEL_NAME
    run_dir = prepare_out(out)
    run_id = _state.new_id("run-")
    kit = run_dir / KIT_DIR
    record = _state.Record(kind="run", id=run_id, paths=[str(kit), str(run_dir / ".k3snb-reserve")],
                           note=str(run_dir)).save()
    summary = RunSummary(run_dir)
    summary.rows = [_row(c, "skipped", c.skip or NOT_RUN, None, run_dir, here=scheduler is None) for c in cells]
    failure: RunStorageError | None = None
    from ._record import environment_facts

    main_thread = threading.current_thread() is threading.main_thread()
    # SIGTERM and SIGHUP (terminal closed) get the Ctrl-C cleanup; handlers need the main thread
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)} if main_thread else {}
    ctx: RunContext | None = None
    reserve = None
    hurry = False  # SIGTERM/SIGHUP: finish within seconds (no report rendering)
    try:
        env = {**os.environ, **kit_env(kit), "K3SNB_TMP": str(tmp_root()), "PYTHONUNBUFFERED": "1",
               _procs.RUN_DIR_ENV: str(run_dir)}
        if runsc is not None:
            env["K3SNB_RUNSC"] = str(runsc)
        ctx = RunContext(run_dir, run_id, kernel, timeout, env, record, in_place)
        try:
            reserve = Reserve(run_dir)
            write_atomic(run_dir / "run.json", json.dumps({
                "run_id": run_id, "kernel": kernel, "argv": sys.argv, "environment": environment_facts(),
                "matrix": {k: list(v) if isinstance(v, list | tuple) else [v] for k, v in (matrix or {}).items()},
                "repeat": repeat, "workers": workers, "scheduler": scheduler,
                "cells": [c.to_dict() for c in cells],
                # the report reads titles and claims (also of skipped cells) from the same registry
                "registry": str((Path(registry) if registry is not None else default_registry()).absolute()),
            }, indent=1, default=str))
            _write_summary(summary)
            if scheduler is not None:
                from ._dask import run_on_cluster

                run_on_cluster(scheduler, cells, ctx, summary, progress)
            else:
                _run_local(cells, ctx, summary, workers, progress)
        except OSError as e:
            if not is_storage_error(e):
                raise
            failure = storage_error(run_dir, e)
    except KeyboardInterrupt as e:
        summary.interrupted = True
        hurry = isinstance(e, _Interrupted)
        e.summary = summary  # the CLI still shows the partial summary and where the run's files are
        raise
    finally:
        # a second Ctrl-C must not cut the cleanup short
        prev = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
        try:
            if ctx is not None:
                ctx.stopping.set()
            _procs.kill_tagged(run_id)
            shutil.rmtree(kit, ignore_errors=True)
            if reserve is not None:
                reserve.release()  # after a full disk, the final summary goes into this space
            if failure is not None:
                for r in summary.rows:
                    if r["reason"] == NOT_RUN:
                        r["reason"] = "not run: the run folder filled up"
            try:
                _write_summary(summary, report=not (hurry or failure))
            except OSError as e:
                if not is_storage_error(e):
                    raise
                failure = failure or storage_error(run_dir, e)
            record.drop()
        finally:
            if main_thread:
                for s, h in old.items():
                    signal.signal(s, h)
                signal.signal(signal.SIGINT, prev)
    if failure is not None:
        failure.summary = summary
        raise failure
    return summary


def _write_summary(summary: RunSummary, report: bool = True) -> None:
    """summary.json/.csv and report.html, each replaced whole; an error leaves the previous valid files."""
    summary.write(report=report)


def _set_row(summary: RunSummary, ctx: RunContext, row: dict[str, Any], write: bool = True) -> None:
    with ctx.lock:
        for i, r in enumerate(summary.rows):
            if r["id"] == row["id"]:
                summary.rows[i] = row
                break
        else:
            summary.rows.append(row)
        if write:
            _write_summary(summary)  # a killed batch still leaves a summary of what finished


def _progress_bar(names: list[str], progress: bool):
    from ..monitoring import progress_view

    # JupyterLab: a widget table of the cells' statuses; papermill: one display updated in place (its
    # final state is what the notebook keeps); terminal: tqdm; CI logs: disabled, one line per cell below
    return progress_view(names, progress)


def _report_progress(bar, progress: bool, done: int, total: int, row: dict[str, Any]) -> None:
    bar.done(row)
    if progress and bar.disable:
        print(f"[{done}/{total}] {row['id']}: {row['status']} ({row['duration_s']} s)"
              + (f" — {row['reason']}" if row["reason"] else ""), file=sys.stderr, flush=True)


def _run_local(cells: list[Cell], ctx: RunContext, summary: RunSummary, workers: int, progress: bool) -> None:
    todo = [c for c in cells if c.skip is None]
    bar = _progress_bar([c.name for c in todo], progress)
    done = 0
    try:
        if workers == 1:
            for c in todo:
                bar.set_postfix_str(c.name)
                t0 = time.monotonic()
                try:
                    row = execute_cell(c, ctx)
                except KeyboardInterrupt:
                    # written once by run_experiments' cleanup
                    _set_row(summary, ctx, _row(c, "failed", "interrupted", time.monotonic() - t0, ctx.run_dir, here=True),
                             write=False)
                    raise
                _set_row(summary, ctx, row)
                done += 1
                _report_progress(bar, progress, done, len(todo), row)
            return
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="k3snb-cell")
        futures: dict[Future, Cell] = {}
        started: dict[str, float] = {}
        try:
            queue = list(todo)
            while queue or futures:
                while queue and len(futures) < workers:
                    c = queue.pop(0)
                    started[c.name] = time.monotonic()
                    bar.start(c.name)
                    futures[pool.submit(execute_cell, c, ctx)] = c
                finished, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                for f in finished:
                    c = futures.pop(f)
                    row = f.result()
                    _set_row(summary, ctx, row)
                    done += 1
                    _report_progress(bar, progress, done, len(todo), row)
        except BaseException:
            ctx.stopping.set()  # the cell threads stop their workers
            for f, c in list(futures.items()):
                with contextlib.suppress(BaseException):
                    f.result(timeout=60)
                _set_row(summary, ctx, _row(c, "failed", "interrupted", time.monotonic() - started[c.name],
                                            ctx.run_dir, here=True), write=False)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


def cell_env(c: Cell, ctx: RunContext, d: Path) -> dict[str, str]:
    from ..runners.base import RUNNERS_LOG_ENV

    env = {**ctx.env, "K3SNB_RESULTS": str(d / "results.json"), "K3SNB_EXPERIMENT": c.exp.id,
           _procs.TAG_ENV: f"{ctx.run_id}/{c.name}",
           RUNNERS_LOG_ENV: str(d / RUNNERS_LOG)}  # every runner the notebook starts appends its info()
    if c.runner:
        env["K3SNB_RUNNER"] = c.runner
        kind, build, _ = parse_spec(c.runner)
        if build:
            env["K3SNB_RUNSC"] = build
    return env


def execute_cell(c: Cell, ctx: RunContext) -> dict[str, Any]:
    """Run one cell in a worker process; always returns its summary row (never raises but Ctrl-C/OSError)."""
    d = ctx.run_dir / c.name
    d.mkdir()
    write_atomic(d / "results.json", json.dumps({
        "experiment": c.exp.id, "cell": c.name, "runner": c.runner, "axes": c.axes, "parameters": c.params,
        "claims": list(c.exp.claims), "records": {}, "verdicts": []}, indent=1, default=str))
    budget = float(ctx.timeout or c.exp.timeout)
    tag = f"{ctx.run_id}/{c.name}"
    spec = {
        "input": str(c.exp.path), "output": str(d / c.exp.notebook), "parameters": c.params,
        "kernel": ctx.kernel, "start_timeout": START_TIMEOUT, "execution_timeout": budget,
        "cwd": str(d), "status": str(d / ".status.json"), "started": str(d / ".started"),
        "parent": os.getpid(), "run_dir": str(ctx.run_dir), "cell": c.name,
        "scratch": ctx.scratch, "record": str(ctx.record.file),
    }
    owners: set[int] = set()
    t0 = time.monotonic()
    status, reason = "failed", ""
    with open(d / "log.txt", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "k3snb.experiments._worker", json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=cell_env(c, ctx, d), cwd=str(d),
            start_new_session=True,  # Ctrl-C reaches the parent only; it decides how to stop the worker
        )
        try:
            while True:
                try:
                    proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                pids = {proc.pid, *descendants(proc.pid)}
                if not pids <= owners:  # tag the kernel and its children for `k3snb doctor --clean`
                    with ctx.lock:
                        for pid in pids - owners:
                            ctx.record.add_pid(pid)
                        ctx.record.save()
                    owners |= pids
                # --timeout is for the whole notebook: counted from the kernel being ready
                with contextlib.suppress(OSError):
                    t0_nb = os.stat(spec["started"]).st_mtime
                    if time.time() > t0_nb + budget:
                        reason = f"timed out: the notebook ran longer than {budget:g} s (--timeout)"
                        _procs.stop_worker(proc, grace=5.0)
                        break
                if time.monotonic() > t0 + START_TIMEOUT + budget + 60:
                    reason = f"timed out: no result after {START_TIMEOUT + budget:g} s"
                    _procs.stop_worker(proc, grace=5.0)
                    break
                if ctx.stopping.is_set():
                    reason = "interrupted"
                    _procs.stop_worker(proc, grace=5.0)
                    break
        except KeyboardInterrupt as e:
            # Ctrl-C: SIGINT lets papermill save the partial notebook; SIGTERM/SIGHUP: stop at once
            _procs.stop_worker(proc, signal.SIGTERM if isinstance(e, _Interrupted) else signal.SIGINT, grace=3.0)
            _procs.kill_tagged(tag, grace=1.0)
            _procs.reap_records(owners)
            for f in (".status.json", ".started", RUNNERS_LOG):
                with contextlib.suppress(OSError):
                    (d / f).unlink()
            raise
        finally:
            if proc.poll() is None:
                _procs.stop_worker(proc, signal.SIGKILL)
    leftovers = _procs.kill_tagged(tag)
    _procs.reap_records(owners)
    with contextlib.suppress(OSError, ValueError):
        st = json.loads((d / ".status.json").read_text())
        status, reason = st["status"], reason or st.get("reason", "")
    for f in (".status.json", ".started"):
        with contextlib.suppress(OSError):
            (d / f).unlink()
    if reason and status == "passed":
        status = "failed"
    if not reason and status != "passed":
        reason = f"worker exited {proc.returncode}; see {d / 'log.txt'}"
        with contextlib.suppress(OSError):
            if shutil.disk_usage(d).free < 64 * 1024:
                reason = f"the run folder filled up during this cell (worker exited {proc.returncode})"
    if leftovers and status == "passed":
        reason = f"killed {len(leftovers)} leftover process(es) the notebook did not stop"
    _note_runner_used(d / "results.json", c)
    if status == "passed" and ctx.in_place:
        shutil.copyfile(d / c.exp.notebook, c.exp.path)
    return _row(c, status, reason, time.monotonic() - t0, ctx.run_dir, here=True)


def runner_facts(spec: str | None) -> dict[str, Any]:
    """What a runner spec resolves to on this machine: kind, runsc path and version string, platform."""
    if not spec:
        return {}
    kind, build, platform = parse_spec(spec)
    from ..runners import requirements

    if "runsc" not in requirements(spec):  # no sandbox build to resolve (the host)
        return {"kind": kind, "label": kind}
    from ..runners.runsc import find_runsc, runsc_version
    from ._plan import build_platforms

    facts: dict[str, Any] = {"kind": kind, "label": spec}
    with contextlib.suppress(Exception):  # a missing build is reported by the cell itself
        path = find_runsc(build)
        facts.update(runsc=str(path), runsc_version=runsc_version(path))
    facts["platform"] = platform or next(iter(build_platforms(build)), None)
    return facts


def _matches(entry: dict[str, Any], facts: dict[str, Any], platform: str | None) -> bool:
    """Whether a started runner's ``info()`` is the runner the cell's spec resolves to (``facts``)."""
    if entry.get("kind") != facts.get("kind"):
        return False
    if facts.get("runsc") and entry.get("runsc"):
        with contextlib.suppress(OSError):
            if Path(entry["runsc"]).resolve() != Path(facts["runsc"]).resolve():
                return False
    elif facts.get("runsc_version") and entry.get("runsc_version") != facts["runsc_version"]:
        return False
    return not platform or entry.get("platform") in (None, platform)  # only a platform the spec names must match


def _note_runner_used(results: Path, c: Cell) -> None:
    """results.json gets ``runners_used`` (every runner the notebook started, from ``$K3SNB_RUNNERS_LOG``) and
    ``runner_used``: the started runner that is the cell's spec (``source: runner``), else the spec as resolved
    here (``source: spec``); never facts of two runners mixed (a host probe started first is not the cell's runner)."""
    log = results.parent / RUNNERS_LOG
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(results.read_text())
        started = []
        with contextlib.suppress(OSError):
            for line in log.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict) and entry not in started:
                        started.append(entry)
        if started:
            doc["runners_used"] = started
        runners = [e for e in doc.get("runners_used") or [] if isinstance(e, dict)]
        used: dict[str, Any] | None = None
        if c.runner:
            facts = runner_facts(c.runner)
            platform = parse_spec(c.runner)[2]
            match = next((e for e in runners if _matches(e, facts, platform)), None)
            used = {**match, "source": "runner"} if match else {**facts, "source": "spec"}
            used["spec"] = c.runner
        elif runners:  # no spec injected: the notebook chose; its first runner is the one it ran in
            used = {**runners[0], "source": "runner"}
        doc["runner_used"] = used
        write_atomic(results, json.dumps(doc, indent=1, default=str))
    with contextlib.suppress(OSError):
        log.unlink()


MACHINE_COLUMNS = ("host", "host_kernel", "runsc_builds", "worker")  # every row has them, local or Dask


@functools.cache
def _this_machine() -> dict[str, Any]:
    from ._record import environment_facts

    return environment_facts()


def _machine_columns(env: Mapping[str, Any] | None) -> dict[str, str]:
    """Where a cell ran, in the columns every summary row has (a Dask row gets its worker's facts instead):
    ``host``, ``host_kernel``, ``runsc_builds`` from the notebook's recorded environment, else this machine's."""
    env = env if isinstance(env, Mapping) and env.get("hostname") else _this_machine()
    builds = env.get("runsc")
    return {"host": str(env.get("hostname") or ""), "host_kernel": str(env.get("kernel") or ""),
            "runsc_builds": ", ".join(f"{k}={v}" for k, v in builds.items()) if isinstance(builds, dict)
            else str(builds or ""), "worker": "local"}


def _row(c: Cell, status: str, reason: str | None, duration: float | None, run_dir: Path,
         here: bool = False) -> dict[str, Any]:
    """A summary row; ``here``: the cell ran (or was skipped) on this machine, so its machine columns are
    filled here (a Dask row gets its worker's facts in ``_bring_home``; one never brought home keeps them empty)."""
    d = run_dir / c.name
    row: dict[str, Any] = {
        "id": c.name, "experiment": c.exp.id, "runner": c.runner, **{k: v for k, v in c.axes.items() if k != "runner"},
        "status": status, "reason": reason or "",
        "duration_s": None if duration is None else round(duration, 1),
        **dict.fromkeys(VERDICTS, 0),
        "notebook": "", "results": "", "log": "",
        "runsc_version": "", "platform_used": "",
        **(_machine_columns(None) if here else dict.fromkeys(MACHINE_COLUMNS, "")),
    }
    if status == "skipped":
        return row
    nb = d / c.exp.notebook
    res = d / "results.json"
    row.update(notebook=str(nb) if nb.exists() else "", results=str(res), log=str(d / "log.txt"))
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(res.read_text())
        for v in doc.get("verdicts", []):
            if v.get("status") in VERDICTS:
                row[v["status"]] += 1
        used = doc.get("runner_used") or {}
        row.update({"runsc_version": used.get("runsc_version", ""), "platform_used": used.get("platform", ""),
                    **(_machine_columns(doc.get("environment")) if here else {})})
    if status == "passed" and not any(row[v] for v in VERDICTS):
        row["reason"] = "no verdict recorded"
    return row
