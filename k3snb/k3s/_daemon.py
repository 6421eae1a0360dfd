"""``python -m k3snb.k3s._daemon SPEC.json``: hold a k3s cluster for the CLI.

CLI invocations are separate processes, but a runner (its namespaces or sandbox) lives as long as
the process that created it. ``k3snb k3s start`` therefore starts this small daemon in its own
session; it launches the cluster, keeps a tagged state record (kind ``k3sd``: its pid, the cluster
dir, state) up to date, and on SIGTERM/SIGINT stops the cluster and removes the record.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import traceback

from .._state import Record


def _save(rec: Record, **state) -> None:
    rec.note = json.dumps(state, default=str)
    rec.save()


def main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    os.unlink(spec_path)
    rec = Record(kind="k3sd", id=spec["id"], pids=[os.getpid()], paths=[spec["daemon_log"]])
    _save(rec, state="starting", profile=spec["profile"], runner=spec["runner"])
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cluster = None
    rc = 0
    try:
        from .cluster import launch_k3s

        cluster = launch_k3s(spec["profile"], spec["runner"], data_dir=spec.get("data_dir"),
                             extra_flags=spec.get("flags", []), timeout=spec.get("timeout", 180),
                             host=spec.get("host", False), strict_flags=spec.get("strict_flags", True),
                             runner_options={"runsc": spec["runsc"]} if spec.get("runsc") else None)
        st = cluster.status()
        _save(rec, state="running", profile=spec["profile"], runner=spec["runner"], cluster=st,
              readiness=cluster.readiness.to_dict(), info=cluster.info())
        while not stop.is_set() and cluster.alive():
            stop.wait(2.0)
            if cluster.alive():
                cluster.poll_readiness()
                _save(rec, state="running", profile=spec["profile"], runner=spec["runner"], cluster=cluster.status(),
                      readiness=cluster.readiness.to_dict())
        if not cluster.alive():
            _save(rec, state="exited", profile=spec["profile"], runner=spec["runner"], cluster=cluster.status(),
                  log_tail=cluster.logs(tail=40))
            stop.wait(3600 * 24)  # keep logs reachable for `k3snb k3s logs` until stopped
    except KeyboardInterrupt:
        pass
    except BaseException as e:  # noqa: BLE001 - report to the waiting CLI through the record
        rc = 1
        _save(rec, state="failed", profile=spec["profile"], runner=spec["runner"],
              error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
        stop.wait(15)  # give the CLI time to read the error
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if cluster is not None:
            cluster.stop()
        rec.drop()
        with contextlib.suppress(OSError):
            os.unlink(spec["daemon_log"])
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
