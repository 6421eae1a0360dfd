"""Batch execution of experiment notebooks with papermill.

Each experiment runs in its own worker process (``python -m k3snb.experiments._worker``) with its own
kernel, so a dead kernel, a crashed gVisor sandbox or a hung cell costs one experiment, not the batch.
Every process the worker starts inherits ``K3SNB_RUN_TAG``; whatever still carries the tag when the
experiment ends (timeout, Ctrl-C, a notebook that forgot to stop k3s) is killed. Jupyter, IPython and
matplotlib state lives in ``<run>/.kit`` (removed at the end), never under ``$HOME``.

Run folder layout::

    runs/<UTC timestamp>/
      run.json                      environment facts, parameters, kit version
      summary.json  summary.csv     one row per experiment (passed | failed | skipped + verdict counts)
      <id>/<notebook>.ipynb         the executed notebook (partial, with the error cell, on failure)
      <id>/results.json             record()/verdict() output ($K3SNB_RESULTS)
      <id>/log.txt                  papermill log with cell output
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _state
from .._paths import tmp_root
from ..errors import InvalidParameter, MissingDependency, UsageError
from ..report._summary import VERDICTS, RunSummary
from ._registry import KNOWN_RUNNERS, Experiment, load_registry

KERNEL_NAME = "k3snb"
KERNEL_DISPLAY = "Python 3 (k3snb)"
START_TIMEOUT = 180  # papermill's 60 s default is too short for a kernel on a loaded 2-core CI box
_GRACE = 10.0


# -- kernel ------------------------------------------------------------------------------------


def kernel_dir() -> Path:
    return Path(sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME


def ensure_kernel() -> str:
    """Install the kit's kernelspec into this environment (``--sys-prefix``) unless present; return its name."""
    if (kernel_dir() / "kernel.json").is_file():
        return KERNEL_NAME
    # ipykernel leaves a tmpXXXX_kernels dir in $TMPDIR; give it a private one and remove it
    with tempfile.TemporaryDirectory(prefix="k3snb-kernel-") as tmp:
        r = subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL_NAME,
             "--display-name", KERNEL_DISPLAY],
            capture_output=True, text=True, env={**os.environ, "TMPDIR": tmp},
        )
    if r.returncode != 0:
        raise MissingDependency(f"cannot install the {KERNEL_NAME!r} kernelspec: {r.stderr.strip()[-300:]}",
                                hint="run scripts/setup.sh (it installs the kernelspec into .venv)")
    return KERNEL_NAME


# -- parameters --------------------------------------------------------------------------------


def resolve_value(text: str) -> Any:
    """Type a ``-p`` value the way papermill does: True/False/None, int, float, else the string."""
    special = {"True": True, "False": False, "None": None}
    if text in special:
        return special[text]
    for typ in (int, float):
        try:
            return typ(text)
        except ValueError:
            pass
    return text


def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """``["n=3", "05:timeout=30"]`` → ``{"n": 3, "05:timeout": 30}`` (``ID:KEY`` targets one experiment)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidParameter(f"malformed parameter {item!r}: expected KEY=VALUE",
                                   hint="write -p name=value (or -p ID:name=value for one experiment)")
        out[key.strip()] = resolve_value(value)
    return out


def notebook_parameters(path: Path) -> dict[str, dict]:
    """The parameters a notebook declares in its ``parameters`` cell.

    papermill's inference (line regexes) drops lines it cannot parse, e.g. a comment containing
    ``=``; names assigned in the cell according to ``ast`` are added so they are not "unknown".
    """
    import ast

    import nbformat
    import papermill

    params = dict(papermill.inspect_notebook(str(path)))
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code" or "parameters" not in cell.metadata.get("tags", []):
            continue
        try:
            body = ast.parse(cell.source).body
        except SyntaxError:
            continue
        for node in body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for t in targets:
                if isinstance(t, ast.Name) and t.id not in params:
                    params[t.id] = {"name": t.id, "inferred_type_name": "None",
                                    "default": ast.get_source_segment(cell.source, node.value), "help": ""}
    return params


# -- planning (all validation happens here, before anything is created) -------------------------


@dataclass
class _Unit:
    exp: Experiment
    runner: str | None
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    skip: str | None = None


def _plan(
    ids: Iterable[str] | str | None,
    params: Mapping[str, Any] | None,
    runners: Iterable[str] | str | None,
    runsc: str | os.PathLike | None,
    registry: str | os.PathLike | None,
) -> list[_Unit]:
    reg = load_registry(registry)
    explicit = ids is not None and ids != [] and ids != ()
    selected = reg.select(list(ids) if explicit and not isinstance(ids, str) else ids)

    if isinstance(runners, str):
        runners = [runners]
    runners = list(runners) if runners is not None else None
    if runners is not None:
        bad = [r for r in runners if r not in KNOWN_RUNNERS]
        if bad or not runners:
            raise InvalidParameter(f"unknown runner(s) {bad}; valid: {', '.join(KNOWN_RUNNERS)}",
                                   hint="pass --runner host or --runner gvisor")
    if runsc is not None:
        from ..runners.runsc import find_runsc

        find_runsc(runsc)  # RunscMissing / InvalidParameter are usage errors (exit 2)

    declared: dict[str, dict | None] = {}
    for e in selected:
        declared[e.id] = notebook_parameters(e.path) if e.path.is_file() else None
        unknown = set(e.parameters) - set(declared[e.id]) if declared[e.id] is not None else set()
        if unknown:
            raise UsageError(f"registry defaults {sorted(unknown)} of {e.id} are not parameters of {e.notebook}")

    scoped: dict[str, dict[str, Any]] = {e.id: {} for e in selected}
    for key, value in (params or {}).items():
        if ":" in key:
            target, name = key.split(":", 1)
            e = reg[target]
            if e not in selected:
                raise InvalidParameter(f"parameter {key!r} targets {e.id}, which is not selected for this run")
            known = declared[e.id]
            if known is not None and name not in known:
                raise InvalidParameter(f"unknown parameter {name!r} for {e.id}; valid: {', '.join(sorted(known)) or '(none)'}")
            scoped[e.id][name] = value
        else:
            takers = [e for e in selected if declared[e.id] and key in declared[e.id]]
            if not takers:
                valid = sorted({p for d in declared.values() if d for p in d})
                raise InvalidParameter(
                    f"unknown parameter {key!r}: no selected notebook declares it; valid: {', '.join(valid) or '(none)'}",
                    hint="see a notebook's parameters with `papermill --help-notebook NOTEBOOK`",
                )
            for e in takers:
                scoped[e.id][key] = value

    if explicit:
        for e in selected:
            if e.path.is_file():
                e.check_explicit(runsc)

    units: list[_Unit] = []
    for e in selected:
        chosen = [e.runners[0]] if runners is None else [r for r in e.runners if r in runners]
        if not chosen:
            units.append(_Unit(e, None, e.id, skip=f"supports runners {', '.join(e.runners)} only"))
            continue
        missing = e.missing(runsc)
        decl = declared[e.id] or {}
        for r in chosen:
            p = dict(e.parameters)
            if "runner" in decl:
                p["runner"] = r
            if runsc is not None and "runsc" in decl:
                p["runsc"] = str(runsc)
            p.update(scoped[e.id])
            name = e.id if len(chosen) == 1 else f"{e.id}-{r}"
            units.append(_Unit(e, r, name, p, skip="; ".join(missing) or None))
    return units


def _prepare_out(out: str | os.PathLike | None) -> Path:
    """Create the run folder (a new or empty one); on failure remove what was created and raise."""
    if out is None:
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        base = Path(os.environ.get("K3SNB_RUNS", "runs")).absolute()
        run = base / stamp
        n = 1
        while run.exists():
            n += 1
            run = base / f"{stamp}-{n}"
    else:
        run = Path(out).absolute()
        if run.exists() and not run.is_dir():
            raise UsageError(f"--out {out} exists and is not a directory", hint="pass a new folder")
        if run.is_dir() and any(run.iterdir()):
            raise UsageError(f"--out {out} is not empty", hint="pass a new or empty folder")
    created: list[Path] = []
    p = run
    while not p.exists():
        created.append(p)
        p = p.parent
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = run / ".k3snb-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        _remove_created(created)
        raise UsageError(f"--out {out or run} is not writable: {e.strerror or e}",
                         hint="pass a folder you can write to (--out DIR)") from None
    return run


def _remove_created(created: list[Path]) -> None:
    for d in created:  # deepest first
        shutil.rmtree(d, ignore_errors=True)


# -- processes ---------------------------------------------------------------------------------


def tagged_processes(tag: str) -> list:
    """Live processes whose environment carries ``K3SNB_RUN_TAG=<tag>`` (or starts with ``<tag>/``)."""
    import psutil

    found = []
    me = os.getpid()
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            v = p.environ().get("K3SNB_RUN_TAG")
        except (psutil.Error, OSError):
            continue
        if v and (v == tag or v.startswith(tag + "/")):
            found.append(p)
    return found


def _kill_tagged(tag: str, grace: float = 5.0) -> list[int]:
    import psutil

    procs = tagged_processes(tag)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)
    return [p.pid for p in procs]


def _stop_worker(proc: subprocess.Popen, first: int = signal.SIGINT) -> None:
    """SIGINT the worker (papermill then shuts its kernel down), then SIGTERM, then SIGKILL its group."""
    for sig, wait in ((first, _GRACE), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)


def _reap_records(owner_pids: set[int]) -> None:
    """Clean what runners inside the experiment tagged but could not clean (their owner died)."""
    stale = [r for r in _state.stale_records() if r.owner_pid in owner_pids]
    if not stale:
        return
    try:
        from ..runners import reaper
    except ImportError:
        return
    with contextlib.suppress(Exception):
        reaper.clean_records(stale)


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


# -- running -----------------------------------------------------------------------------------


class _Interrupted(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so the same cleanup runs."""


def _sigterm(signum, frame):
    raise _Interrupted()


def _kit_env(kit: Path) -> dict[str, str]:
    dirs = {
        "IPYTHONDIR": kit / "ipython",
        "JUPYTER_CONFIG_DIR": kit / "jupyter" / "config",
        "JUPYTER_DATA_DIR": kit / "jupyter" / "data",
        "JUPYTER_RUNTIME_DIR": kit / "jupyter" / "runtime",
        "MPLCONFIGDIR": kit / "mpl",
        "TMPDIR": kit / "tmp",
    }
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return {k: str(v) for k, v in dirs.items()} | {"JUPYTER_PLATFORM_DIRS": "1"}


def run_experiments(
    ids: Iterable[str] | str | None = None,
    params: Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    runners: Iterable[str] | str | None = None,
    runsc: str | os.PathLike | None = None,
    *,
    timeout: float | None = None,
    registry: str | os.PathLike | None = None,
    in_place: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Execute experiment notebooks with papermill into a run folder and summarise them.

    Args:
        ids: experiment ids or NN prefixes (default: all). Naming one whose root/runsc requirement is
            missing is an error; unnamed ones are skipped with the reason.
        params: ``{name: value}`` injected into every selected notebook that declares ``name``;
            ``{"ID:name": value}`` targets one experiment.
        out: run folder (default ``runs/<UTC timestamp>``; must be new or empty).
        runners: runner kinds to run each experiment with (default: its first listed runner).
        runsc: runsc build (``"2022"``, ``"2024"`` or a path), injected as parameter ``runsc``.
        timeout: seconds per experiment (default: the registry's).
        registry: registry YAML (default: the packaged one or ``$K3SNB_REGISTRY``).
        in_place: copy each passed notebook back over its source (``make notebooks``).
        progress: show a tqdm progress bar.

    Returns:
        RunSummary: one row per experiment; ``.exit_code`` is 0 when nothing failed.

    Raises:
        UsageError: unknown id/runner/parameter, malformed value, unwritable ``out``, a named
            experiment needing root or runsc that is missing — before anything is created.
        KeyboardInterrupt: after cleaning up; the partial summary is written first.
    """
    if timeout is not None and not timeout > 0:
        raise InvalidParameter(f"timeout must be a positive number of seconds, got {timeout!r}")
    units = _plan(ids, params, runners, runsc, registry)
    kernel = ensure_kernel() if any(u.skip is None for u in units) else KERNEL_NAME
    run_dir = _prepare_out(out)
    run_id = _state.new_id("run-")
    kit = run_dir / ".kit"
    kit_tmp_root = str(tmp_root())
    record = _state.Record(kind="run", id=run_id, paths=[str(kit)], note=str(run_dir)).save()
    summary = RunSummary(run_dir)
    from ._record import environment_facts

    main_thread = threading.current_thread() is threading.main_thread()
    # SIGTERM gets the Ctrl-C cleanup; signal handlers can only be set from the main thread
    old_term = signal.signal(signal.SIGTERM, _sigterm) if main_thread else None
    try:
        env_base = {**os.environ, **_kit_env(kit), "K3SNB_TMP": kit_tmp_root, "PYTHONUNBUFFERED": "1",
                    "K3SNB_RUN_DIR": str(run_dir)}
        if runsc is not None:
            env_base["K3SNB_RUNSC"] = str(runsc)
        (run_dir / "run.json").write_text(json.dumps({
            "run_id": run_id, "kernel": kernel, "argv": sys.argv,
            "environment": environment_facts(),
            "experiments": [{"id": u.name, "runner": u.runner, "parameters": u.params, "skip": u.skip}
                            for u in units],
        }, indent=1, default=str))
        _execute_all(units, run_dir, env_base, run_id, record, summary, kernel, timeout, in_place, progress)
    except KeyboardInterrupt:
        summary.interrupted = True
        done = {r["id"] for r in summary.rows}
        for u in units:
            if u.name not in done:
                summary.rows.append(_row(u, "skipped", "run interrupted", None, run_dir))
        raise
    finally:
        # a second Ctrl-C must not cut the cleanup short
        prev = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
        try:
            _kill_tagged(run_id)
            shutil.rmtree(kit, ignore_errors=True)
            summary.write()
            record.drop()
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, old_term)
                signal.signal(signal.SIGINT, prev)
    return summary


def _row(u: _Unit, status: str, reason: str | None, duration: float | None, run_dir: Path) -> dict[str, Any]:
    d = run_dir / u.name
    row: dict[str, Any] = {
        "id": u.name, "runner": u.runner, "status": status, "reason": reason or "",
        "duration_s": None if duration is None else round(duration, 1),
        **dict.fromkeys(VERDICTS, 0),
        "notebook": "", "results": "", "log": "",
    }
    if status == "skipped":
        return row
    nb = d / u.exp.notebook
    res = d / "results.json"
    row.update(notebook=str(nb) if nb.exists() else "", results=str(res), log=str(d / "log.txt"))
    with contextlib.suppress(OSError, ValueError):
        for v in json.loads(res.read_text()).get("verdicts", []):
            if v.get("status") in VERDICTS:
                row[v["status"]] += 1
    if status == "passed" and not any(row[v] for v in VERDICTS):
        row["reason"] = "no verdict recorded"
    return row


def _execute_all(units, run_dir, env_base, run_id, record, summary, kernel, timeout, in_place, progress):
    from tqdm.auto import tqdm

    # a bar on a terminal or in a notebook; plain lines in CI logs (disable=None means "if not a tty")
    in_kernel = "ipykernel" in sys.modules
    disable = True if not progress else (False if in_kernel else None)
    bar = tqdm(total=len(units), desc="experiments", unit="nb", disable=disable, file=sys.stderr)
    try:
        for u in units:
            bar.set_postfix_str(u.name)
            if u.skip:
                summary.rows.append(_row(u, "skipped", u.skip, None, run_dir))
                bar.update(1)
                continue
            t0 = time.monotonic()
            try:
                row = _execute_one(u, run_dir, env_base, run_id, record, kernel, timeout, in_place)
            except KeyboardInterrupt:
                summary.rows.append(_row(u, "failed", "interrupted", time.monotonic() - t0, run_dir))
                raise
            summary.rows.append(row)
            summary.write()  # a killed batch still leaves a summary of what finished
            bar.update(1)
            if progress and bar.disable:
                print(f"[{len(summary.rows)}/{len(units)}] {u.name}: {row['status']} ({row['duration_s']} s)"
                      + (f" — {row['reason']}" if row["reason"] else ""), file=sys.stderr, flush=True)
    finally:
        bar.close()


def _execute_one(u: _Unit, run_dir: Path, env_base: dict, run_id: str, record: _state.Record,
                 kernel: str, timeout: float | None, in_place: bool) -> dict[str, Any]:
    d = run_dir / u.name
    d.mkdir()
    results = d / "results.json"
    results.write_text(json.dumps({"experiment": u.exp.id, "runner": u.runner, "parameters": u.params,
                                   "claims": list(u.exp.claims), "records": {}, "verdicts": []}, indent=1))
    budget = float(timeout or u.exp.timeout)
    tag = f"{run_id}/{u.name}"
    spec = {
        "input": str(u.exp.path), "output": str(d / u.exp.notebook), "parameters": u.params,
        "kernel": kernel, "start_timeout": START_TIMEOUT, "execution_timeout": budget,
        "cwd": str(d), "status": str(d / ".status.json"),
    }
    env = {**env_base, "K3SNB_RESULTS": str(results), "K3SNB_EXPERIMENT": u.exp.id, "K3SNB_RUN_TAG": tag}
    if u.runner:
        env["K3SNB_RUNNER"] = u.runner
    owners: set[int] = set()
    t0 = time.monotonic()
    status, reason = "failed", ""
    with open(d / "log.txt", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "k3snb.experiments._worker", json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(d),
            start_new_session=True,  # Ctrl-C reaches the parent only; it decides how to stop the worker
        )
        try:
            deadline = t0 + budget + START_TIMEOUT + 60
            while True:
                try:
                    proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                pids = {proc.pid, *_descendants(proc.pid)}
                if not pids <= owners:  # tag the kernel and its children for `k3snb doctor --clean`
                    for pid in pids - owners:
                        record.add_pid(pid)
                    owners |= pids
                    record.save()
                if time.monotonic() > deadline:
                    reason = f"timed out after {budget:.0f} s"
                    _stop_worker(proc)
                    break
        except KeyboardInterrupt:
            _stop_worker(proc)
            _kill_tagged(tag)
            _reap_records(owners)
            raise
        finally:
            if proc.poll() is None:
                _stop_worker(proc, signal.SIGKILL)
    leftovers = _kill_tagged(tag)
    _reap_records(owners)
    with contextlib.suppress(OSError, ValueError):
        st = json.loads((d / ".status.json").read_text())
        status, reason = st["status"], reason or st.get("reason", "")
    with contextlib.suppress(OSError):
        (d / ".status.json").unlink()
    if not reason and status != "passed":
        reason = f"worker exited {proc.returncode}; see {d / 'log.txt'}"
    if leftovers and status == "passed":
        reason = f"killed {len(leftovers)} leftover process(es) the notebook did not stop"
    if status == "passed" and in_place:
        shutil.copyfile(d / u.exp.notebook, u.exp.path)
    return _row(u, status, reason, time.monotonic() - t0, run_dir)
