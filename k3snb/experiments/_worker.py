"""One experiment in its own process: ``python -m k3snb.experiments._worker SPEC_JSON``.

Runs papermill, writes ``{"status", "reason"}`` to ``spec["status"]`` and logs cell output to stdout
(the parent sends it to ``<run>/<id>/log.txt``). Never raises: every failure is a status.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from ._execute import KERNEL_DISPLAY


def main(spec: dict[str, Any]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import nbformat
    import papermill

    log = logging.getLogger("k3snb")
    result: dict[str, Any]
    try:
        papermill.execute_notebook(
            spec["input"], spec["output"], parameters=spec["parameters"], kernel_name=spec["kernel"],
            start_timeout=spec["start_timeout"], execution_timeout=spec["execution_timeout"],
            log_output=True, progress_bar=False, cwd=spec["cwd"],
        )
        result = {"status": "passed"}
    except papermill.PapermillExecutionError as e:
        result = {"status": "failed", "reason": f"cell {e.exec_count}: {e.ename}: {e.evalue}"[:400]}
        log.error("cell %s raised:\n%s", e.exec_count, "\n".join(e.traceback))
    except KeyboardInterrupt:
        result = {"status": "failed", "reason": "interrupted"}
    except Exception as e:  # dead kernel, no such kernel, cell timeout: one failed row, not a crashed batch
        result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"[:400]}
        log.error("execution failed:\n%s", traceback.format_exc())
    log.info("experiment %s: %s", result["status"], result.get("reason", ""))
    # papermill keeps the source kernelspec; pin ours so nbval re-executes with the same kernel
    with contextlib.suppress(OSError, ValueError):
        nb = nbformat.read(spec["output"], as_version=4)
        nb.metadata["kernelspec"] = {"name": spec["kernel"], "display_name": KERNEL_DISPLAY, "language": "python"}
        nbformat.write(nb, spec["output"])
    Path(spec["status"]).write_text(json.dumps(result))
    return 0 if result["status"] == "passed" else 1


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
