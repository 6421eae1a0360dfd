"""Sweep cells on a Dask distributed cluster: each runs on a worker as it would locally; files come home."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import MissingDependency, UsageError
from ._plan import Cell

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # reported by check_scheduler as a missing dependency
    WorkerPlugin = object

STOP_POLL = 0.5
_KEEP = (".ipynb", ".json", ".txt", ".csv", ".html", ".log", ".png", ".svg", ".arrow")  # what comes home


def parse_scheduler(address: str, *, how: str = "pass --scheduler tcp://HOST:PORT") -> tuple[str, int]:
    """``tcp://HOST:PORT`` → ``(host, port)``; raises UsageError (hint ``how``) for anything else."""
    m = re.fullmatch(r"tcp://([^:/\s]+|\[[0-9a-fA-F:]+\]):(\d{1,5})", address or "")
    if not m or not 0 < int(m.group(2)) < 65536:
        raise UsageError(f"malformed scheduler address {address!r}: expected tcp://HOST:PORT", hint=how)
    return m.group(1).strip("[]"), int(m.group(2))


def check_scheduler(address: str) -> tuple[str, int]:
    """Validate ``tcp://HOST:PORT`` and that something listens there.

    Raises:
        UsageError: malformed address or nothing listening (before anything is created).
        MissingDependency: the ``distributed`` package is not installed.
    """
    host, port = parse_scheduler(address)
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise MissingDependency("--scheduler needs the `distributed` package",
                                hint="pip install distributed (it is a k3snb dependency)") from None
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        raise UsageError(f"no Dask scheduler at {address}: {e.strerror or e}",
                         hint="start one (`dask scheduler`) and workers (`k3snb worker tcp://HOST:PORT`), "
                              "or drop --scheduler to run here") from None
    return host, port


class K3snbWorkerPlugin(WorkerPlugin):
    """Dask WorkerPlugin: on every worker that joins, install the kit's kernelspec and report readiness."""

    name = "k3snb"

    def setup(self, worker) -> None:
        from ._kernel import ensure_kernel

        with contextlib.suppress(Exception):  # a worker that can't is reported per cell with the reason
            ensure_kernel()


def readiness() -> dict[str, Any]:
    """This machine as a sweep worker: root, runsc builds, k3s, kernelspec."""
    from .. import _capabilities as cap
    from ._record import environment_facts

    facts = environment_facts()
    return {"host": facts["hostname"], "kernel": facts["kernel"], "root": cap.is_root(),
            "runsc": facts["runsc"], "k3s": facts["k3s"], "kit_version": facts["kit_version"]}


def _missing_here(c: Cell) -> list[str]:
    """The cell's requirements checked on this worker (root, runsc build, platform, programs, k3s)."""
    from ..runners import requirements
    from ._plan import _platform_available, parse_spec
    from ._registry import _has

    _, build, platform = parse_spec(c.runner) if c.runner else (None, None, None)
    missing = c.exp.missing(build)
    missing = [m for m in missing if not m.startswith("notebook ")]  # the notebook travels with the cell
    needs = requirements(c.runner) if c.runner else ()
    if "root" in needs and not _has("root", None) and "not root" not in missing:
        missing.append("not root")
    if "runsc" in needs and not missing:
        if not _has("runsc", build):
            missing.append(f"runsc {build or '(system)'} missing")
        elif platform and not _platform_available(build, platform):
            missing.append(f"platform {platform} not available with runsc {build or 'default build'}")
    return missing


def remote_cell(cell: Cell, notebook: bytes, run_id: str, timeout: float | None, stop_name: str) -> dict[str, Any]:
    """Run one cell on this Dask worker, in a scratch run folder; return its row, facts and files."""
    from ._execute import RunContext, _row, execute_cell
    from ._kernel import ensure_kernel, kit_env

    facts = readiness()
    with contextlib.suppress(Exception):
        from distributed import get_worker

        facts["worker"] = get_worker().address
    missing = _missing_here(cell)
    if missing:
        row = _row(cell, "skipped", f"on {facts['host']}: " + "; ".join(missing), None, Path("."))
        return {"row": row, "facts": facts, "files": {}}
    kernel = ensure_kernel()
    base = Path(tempfile.mkdtemp(prefix="k3snb-dask-cell-"))
    stop = threading.Event()
    try:
        nb = base / "src" / cell.exp.notebook
        nb.parent.mkdir()
        nb.write_bytes(notebook)
        c = dataclasses.replace(cell, exp=dataclasses.replace(cell.exp, path=nb))
        run_dir = base / "run"
        run_dir.mkdir()
        from .. import _state
        from .._paths import tmp_root

        # one id per attempt: a retry of this cell may land on a machine where the lost attempt is still
        # being torn down, and that teardown kills whatever carries its tag (<id>/<cell>); doctor matches it too
        attempt = _state.new_id(f"{run_id}-")
        record = _state.Record(kind="run", id=attempt, paths=[str(base)], note=str(run_dir)).save()
        env = {**os.environ, **kit_env(base / "kit"), "K3SNB_TMP": str(tmp_root()), "PYTHONUNBUFFERED": "1",
               "K3SNB_RUN_DIR": str(run_dir)}
        ctx = RunContext(run_dir, attempt, kernel, timeout, env, record, scratch=str(base))
        ctx.stopping = stop
        watcher = threading.Thread(target=_watch_stop, args=(_stop_event(stop_name), stop), daemon=True)
        watcher.start()
        row = execute_cell(c, ctx)  # its duration_s is the cell's, as locally: shipping files is Dask's cost
        stop.set()
        files = {}
        for f in sorted((run_dir / c.name).rglob("*")):
            if f.is_file() and f.suffix in _KEEP and f.stat().st_size < 64 * 1024 * 1024:
                files[str(f.relative_to(run_dir / c.name))] = base64.b64encode(f.read_bytes()).decode()
        record.drop()
        return {"row": row, "facts": facts, "files": files}
    finally:
        stop.set()
        shutil.rmtree(base, ignore_errors=True)


def _stop_event(name: str):
    """The run's Dask Event, made here in the task's thread: ``get_client()`` finds the worker through a
    context variable that a new thread does not inherit."""
    from distributed import Event, get_client

    try:
        return Event(name, client=get_client())
    except ValueError:  # not on a Dask worker (a direct call): nothing can ask this cell to stop
        return None


def _watch_stop(ev, stop: threading.Event) -> None:
    """Set ``stop`` when the client sets the run's Dask Event (Ctrl-C on the client)."""
    if ev is None:
        return
    while not stop.is_set():
        try:
            if ev.wait(timeout=STOP_POLL):
                stop.set()
                return
        except Exception:  # the scheduler went away: the cell can no longer be asked to stop
            if stop.wait(STOP_POLL):
                return


def run_on_cluster(address: str, cells: list[Cell], ctx, summary, progress: bool) -> None:
    """Submit every runnable cell; write each finished cell's files and row as soon as it is back."""
    from distributed import Client, Event, as_completed
    from distributed.client import FutureCancelledError

    from ._execute import _progress_bar, _report_progress, _row, _set_row

    todo = [c for c in cells if c.skip is None]
    client = Client(address, timeout=30, set_as_default=False)
    stop_name = f"k3snb-stop-{ctx.run_id}"
    stop = Event(stop_name, client=client)
    old_failures = client.run_on_scheduler(_set_allowed_failures, 1)  # a lost worker: one retry elsewhere
    bar = _progress_bar([c.name for c in todo], progress)
    futures = {}
    done = 0
    try:
        client.register_plugin(K3snbWorkerPlugin(), name="k3snb")
        for c in todo:
            f = client.submit(remote_cell, c, c.exp.path.read_bytes(), ctx.run_id, ctx.timeout, stop_name,
                              key=f"k3snb-{ctx.run_id}-{c.name}", pure=False)
            futures[f] = c
        for f in as_completed(list(futures), loop=client.loop):
            c = futures[f]
            try:
                res = f.result()
                row = _bring_home(res, c, ctx)
            except FutureCancelledError:
                row = _row(c, "failed", "cancelled", None, ctx.run_dir)
            except Exception as e:  # KilledWorker (lost twice), a worker-side bug: one failed row each
                reason = f"{type(e).__name__}: {e}"
                if type(e).__name__ == "KilledWorker":
                    reason = f"the worker running it was lost twice (retried once elsewhere): {e}"
                row = _row(c, "failed", reason[:400], None, ctx.run_dir)
            _set_row(summary, ctx, row)
            done += 1
            _report_progress(bar, progress, done, len(todo), row)
    except BaseException:
        # Ctrl-C: the workers stop their cells (the stop event reaches execute_cell), then we cancel
        with contextlib.suppress(Exception):
            stop.set()
        deadline = time.monotonic() + 30
        for f, c in futures.items():
            with contextlib.suppress(BaseException):
                res = f.result(timeout=max(0.1, deadline - time.monotonic()))
                _set_row(summary, ctx, _bring_home(res, c, ctx), write=False)
                continue
            if not f.done() or f.status != "finished":
                _set_row(summary, ctx, _row(c, "failed", "interrupted", None, ctx.run_dir), write=False)
        with contextlib.suppress(Exception):
            client.cancel(list(futures))
        raise
    finally:
        bar.close()
        with contextlib.suppress(Exception):
            client.run_on_scheduler(_set_allowed_failures, old_failures)
        with contextlib.suppress(Exception):
            stop.clear()
        client.close(timeout=10)


def _set_allowed_failures(n: int, dask_scheduler=None) -> int:
    old = dask_scheduler.allowed_failures
    dask_scheduler.allowed_failures = n
    return old


def _bring_home(res: dict[str, Any], c: Cell, ctx) -> dict[str, Any]:
    """Write a remote cell's files into ``<run>/<cell>/``; its row with local paths and the worker's facts."""
    d = ctx.run_dir / c.name
    row = dict(res["row"])
    if res["files"]:
        d.mkdir(exist_ok=True)
        for rel, data in res["files"].items():
            target = (d / rel).resolve()
            if d.resolve() not in target.parents:
                continue  # never write outside the cell folder, whatever a worker sends
            target.parent.mkdir(parents=True, exist_ok=True)
            from ._files import write_atomic

            write_atomic(target, base64.b64decode(data))
        for key in ("notebook", "results", "log"):
            if row.get(key):
                row[key] = str(d / Path(row[key]).name)
    facts = res.get("facts") or {}
    row.update(worker=facts.get("worker", ""), host=facts.get("host", ""), host_kernel=facts.get("kernel", ""),
               runsc_builds=", ".join(f"{k}={v}" for k, v in facts.get("runsc", {}).items())
               if isinstance(facts.get("runsc"), dict) else str(facts.get("runsc", "")))
    return row


WORKER_WAIT = 60.0  # seconds a worker waits for its scheduler by default (it may come up first)


def worker_main(scheduler: str | None, nthreads: int, check_only: bool, wait: float = WORKER_WAIT) -> int:
    """``k3snb worker``: prepare this machine (kernelspec), report readiness, then serve the scheduler.

    Raises:
        UsageError: malformed address (before anything else), or nothing listens there after ``wait`` s.
    """
    import json

    from ._kernel import ensure_kernel

    if not check_only:
        parse_scheduler(scheduler or "", how="pass k3snb worker tcp://HOST:PORT (e.g. tcp://10.0.0.5:8786)")
    ensure_kernel()
    facts = readiness()
    print(json.dumps(facts, indent=1, default=str), flush=True)
    if not facts["root"]:
        print("warning: not root: gVisor cells will be skipped on this worker", file=sys.stderr)
    if check_only:
        return 0
    deadline = time.monotonic() + wait
    try:
        check_scheduler(scheduler)
    except UsageError:  # say what it waits for, so a silent minute is not mistaken for a hang
        print(f"waiting up to {wait:g} s for the Dask scheduler at {scheduler} (--timeout S to change)",
              file=sys.stderr, flush=True)
        while True:
            if time.monotonic() >= deadline:
                raise UsageError(f"no Dask scheduler at {scheduler} after waiting {wait:g} s",
                                 hint="start it first (`dask scheduler`), check HOST:PORT and the firewall, "
                                      "or wait longer with --timeout S") from None
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            try:
                check_scheduler(scheduler)
                break
            except UsageError:
                continue
    import asyncio

    from distributed import Worker

    from .._state import make_tempdir

    scratch = make_tempdir("dask-worker")  # Dask's own spill/scratch space, not /tmp/dask-scratch-space

    async def serve() -> None:
        async with Worker(scheduler, nthreads=nthreads, name=f"k3snb-{facts['host']}-{os.getpid()}",
                          local_directory=str(scratch)) as w:
            await w.finished()

    def stop(signum, frame):
        raise KeyboardInterrupt

    import signal

    signal.signal(signal.SIGTERM, stop)  # `kill` of the worker: leave like Ctrl-C, removing the scratch dir
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0
