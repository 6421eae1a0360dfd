"""One cell in its own process (``python -m k3snb.experiments._worker SPEC_JSON``), dying with the run."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ._kernel import KERNEL_DISPLAY


class _Stop(KeyboardInterrupt):
    """SIGTERM/SIGHUP (or the parent's death): stop papermill like Ctrl-C would."""


_STOPPED: list[str] = []
_LOCK = threading.RLock()  # a second signal may arrive during the cleanup


def _kill_everything() -> None:
    """SIGKILL every descendant (kernel, its children, runsc), then reap the records they left."""
    from . import _procs

    with _LOCK:
        me = os.getpid()
        killed = set(_procs.kill_tree(me))
        tag = os.environ.get(_procs.TAG_ENV)
        if tag:  # double-forked daemons are no descendants any more, but they carry the tag
            killed |= set(_procs.kill_tagged(tag, grace=0.5))
        with contextlib.suppress(Exception):  # best effort: `k3snb doctor --clean` is the backstop
            _procs.reap_records(killed)


def _on_signal(signum, frame):
    why = "the run died" if signum == signal.SIGTERM and _parent_gone() else "the run was stopped"
    _STOPPED.append(why)
    print(f"{time.strftime('%H:%M:%S')} k3snb: signal {signal.Signals(signum).name}: {why}; stopping the kernel",
          flush=True)
    # never outlive the run by long, even if the reaper or papermill's kernel shutdown hangs
    t = threading.Timer(3.0, os._exit, args=(1,))
    t.daemon = True
    t.start()
    _kill_everything()
    raise _Stop(why)


_PARENT = [0]


def _parent_gone() -> bool:
    """The run process died (a SIGKILL'd multi-threaded parent may still be a zombie thread group)."""
    from .._procfs import proc_state

    return os.getppid() != _PARENT[0] or proc_state(_PARENT[0]) in (None, "Z", "X")


def _orphaned(spec: dict[str, Any], why: str) -> None:
    """The run process is gone: put this cell's failed row into the run's summary ourselves."""
    import fcntl

    from ..report._summary import RunSummary

    for f in (spec["started"], Path(spec["started"]).with_name(".runners.jsonl")):
        with contextlib.suppress(OSError):
            Path(f).unlink()
    if spec.get("scratch"):  # a Dask worker's private copy of the run died with that worker: nothing to keep
        import shutil

        shutil.rmtree(spec["scratch"], ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(spec["record"])
        return
    run_dir = Path(spec["run_dir"])
    with contextlib.suppress(Exception):
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # other orphaned workers of the same run update it too
            summary = RunSummary.read(run_dir)
            summary.interrupted = True
            for row in summary.rows:
                if row["id"] == spec["cell"]:
                    row.update(status="failed", reason=why)
            summary.write(report=False)  # quick: this process must not outlive its run by long
        finally:
            os.close(fd)


def main(spec: dict[str, Any]) -> int:
    """Run papermill; write ``{"status", "reason"}`` to ``spec["status"]``; log cell output to stdout.

    Never raises: every failure is a status. ``PR_SET_PDEATHSIG`` turns the parent's death (even
    ``kill -9``) into SIGTERM here; SIGTERM/SIGHUP kill the kernel's whole process tree, reap the
    sandboxes the kernel's runners recorded and mark the cell failed within a second or two.
    """
    from . import _procs

    _PARENT[0] = int(spec.get("parent") or os.getppid())
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    if not _procs.die_with_parent(_PARENT[0]):
        _orphaned(spec, "the run died before this cell started")
        return 1
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("k3snb")
    result: dict[str, Any]
    try:
        import nbformat
        import papermill

        def started(**_: Any) -> None:  # the kernel is up: the whole-notebook timeout starts now
            Path(spec["started"]).touch()

        papermill.execute_notebook(
            spec["input"], spec["output"], parameters=spec["parameters"], kernel_name=spec["kernel"],
            start_timeout=spec["start_timeout"], execution_timeout=spec["execution_timeout"],
            log_output=True, progress_bar=False, cwd=spec["cwd"], on_notebook_start=started,
        )
        result = {"status": "passed"}
    except _Stop:
        result = {"status": "failed", "reason": _STOPPED[0] if _STOPPED else "interrupted"}
    except KeyboardInterrupt:
        result = {"status": "failed", "reason": _STOPPED[0] if _STOPPED else "interrupted"}
    except Exception as e:  # dead kernel, no such kernel, cell error: one failed row, not a crashed batch
        if type(e).__name__ == "PapermillExecutionError":
            result = {"status": "failed", "reason": f"cell {e.exec_count}: {e.ename}: {e.evalue}"[:400]}
            log.error("cell %s raised:\n%s", e.exec_count, "\n".join(e.traceback))
        else:
            result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"[:400]}
            log.error("execution failed:\n%s", traceback.format_exc())
    if _STOPPED:
        _kill_everything()
        if _STOPPED[0] == "the run died" or _parent_gone():
            log.info("experiment failed: the run died; its processes were stopped")
            _orphaned(spec, "the run died (k3snb run was killed); this cell was stopped")
            return 1
    log.info("experiment %s: %s", result["status"], result.get("reason", ""))
    # papermill keeps the source kernelspec; pin ours so nbval re-executes with the same kernel
    with contextlib.suppress(OSError, ValueError):
        import nbformat

        nb = nbformat.read(spec["output"], as_version=4)
        nb.metadata["kernelspec"] = {"name": spec["kernel"], "display_name": KERNEL_DISPLAY, "language": "python"}
        from ._files import write_atomic

        write_atomic(spec["output"], nbformat.writes(nb))
    with contextlib.suppress(OSError):
        Path(spec["status"]).write_text(json.dumps(result))
    return 0 if result["status"] == "passed" else 1


if __name__ == "__main__":
    code = main(json.loads(sys.argv[1]))
    if _STOPPED:  # jupyter_client's threads would hold interpreter shutdown for seconds: go now
        sys.stdout.flush()
        os._exit(code)
    sys.exit(code)
