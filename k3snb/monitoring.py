"""psutil sampler: process-tree resource samples over time, as a DataFrame and a plot.

``monitor(target)`` starts a background thread that every ``interval`` seconds samples the tree of
each root pid (the root and all descendants): CPU %, RSS, threads, open fds. ``target`` is a pid, a
list of pids, a ``psutil.Process``, a spawned process handle, or a :class:`~k3snb.K3sCluster` (for
gVisor the host-side runsc sandbox processes — the sentry's resource use *is* k3s's).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidParameter
from .report import Rich, render

COLUMNS = ["t", "time", "root", "pid", "ppid", "name", "cpu_percent", "rss_bytes", "threads", "fds"]


def _roots_of(target: Any) -> Callable[[], list[int]]:
    if hasattr(target, "root_pids"):
        return target.root_pids
    if isinstance(target, int):
        return lambda: [target]
    if isinstance(target, Iterable) and not isinstance(target, (str, bytes)):
        pids = [int(p) for p in target]
        return lambda: pids
    for attr in ("pid", "popen", "client"):
        v = getattr(target, attr, None)
        if isinstance(v, int):
            return lambda v=v: [v]
        if v is not None and isinstance(getattr(v, "pid", None), int):
            return lambda v=v: [v.pid]
    raise InvalidParameter(f"cannot monitor {target!r}",
                           hint="pass a pid, a list of pids, a psutil.Process, a spawned process or a K3sCluster")


@dataclass(repr=False)
class Monitor(Rich):
    """A running (or finished) sampler. ``stop()`` ends it; ``to_frame()`` has one row per process per sample."""

    roots: Callable[[], list[int]]
    interval: float = 2.0
    duration: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    _title_text = "process-tree samples"

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise InvalidParameter(f"interval must be > 0, got {self.interval}", hint="e.g. interval=1.0")
        self._stop = threading.Event()
        self._procs: dict[int, Any] = {}
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="k3snb-monitor", daemon=True)
        self._thread.start()

    # sampling -----------------------------------------------------------------------------------
    def _proc(self, pid: int):
        import psutil

        p = self._procs.get(pid)
        if p is None:
            p = psutil.Process(pid)
            p.cpu_percent(None)  # first call primes the CPU counter
            self._procs[pid] = p
        return p

    def sample(self) -> list[dict[str, Any]]:
        import psutil

        now = time.time()
        t = round(time.monotonic() - self._t0, 3)
        out = []
        seen: set[int] = set()
        for root in self.roots():
            try:
                rp = self._proc(root)
                tree = [rp, *rp.children(recursive=True)]
            except psutil.Error:
                continue
            for child in tree:
                if child.pid in seen:
                    continue
                seen.add(child.pid)
                try:
                    p = self._proc(child.pid)
                    with p.oneshot():
                        row = {"t": t, "time": now, "root": root, "pid": p.pid, "ppid": p.ppid(), "name": p.name(),
                               "cpu_percent": p.cpu_percent(None), "rss_bytes": p.memory_info().rss,
                               "threads": p.num_threads(), "fds": None}
                        with contextlib.suppress(psutil.Error):
                            row["fds"] = p.num_fds()
                    out.append(row)
                except psutil.Error:
                    self._procs.pop(child.pid, None)
        self.rows.extend(out)
        return out

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.sample()
            if self.duration is not None and time.monotonic() - self._t0 >= self.duration:
                break
            self._stop.wait(self.interval)

    def stop(self) -> Monitor:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(self.interval + 5)
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # presentation -------------------------------------------------------------------------------
    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(list(self.rows), columns=COLUMNS)

    def totals(self):
        """One row per sample: summed CPU %, RSS and threads over the tree, process count."""
        import pandas as pd

        df = self.to_frame()
        if df.empty:
            return pd.DataFrame(columns=["t", "cpu_percent", "rss_bytes", "threads", "processes"])
        g = df.groupby("t")
        return pd.DataFrame({"cpu_percent": g["cpu_percent"].sum(), "rss_bytes": g["rss_bytes"].sum(),
                             "threads": g["threads"].sum(), "processes": g["pid"].nunique()}).reset_index()

    def summary(self) -> dict[str, Any]:
        tot = self.totals()
        return {
            "samples": int(tot["t"].nunique()) if not tot.empty else 0,
            "duration_s": float(tot["t"].max()) if not tot.empty else 0.0,
            "peak_rss_mb": round(float(tot["rss_bytes"].max()) / 2**20, 1) if not tot.empty else None,
            "mean_cpu_percent": round(float(tot["cpu_percent"].mean()), 1) if not tot.empty else None,
            "max_processes": int(tot["processes"].max()) if not tot.empty else 0,
            "running": self.running,
        }

    def plot(self, ax=None):
        """RSS (MiB) and CPU % of the whole tree over time; returns the matplotlib Figure."""
        import matplotlib.pyplot as plt

        tot = self.totals()
        if ax is None:
            fig, ax = plt.subplots(figsize=(8, 3.5))
        else:
            fig = ax.figure
        ax.plot(tot["t"], tot["rss_bytes"] / 2**20, color="tab:blue", label="RSS (MiB)")
        ax.set_xlabel("seconds")
        ax.set_ylabel("RSS (MiB)", color="tab:blue")
        ax2 = ax.twinx()
        ax2.plot(tot["t"], tot["cpu_percent"], color="tab:red", label="CPU %")
        ax2.set_ylabel("CPU %", color="tab:red")
        ax.set_title("process tree resources")
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        return render(self._title_text, self.summary(), [("totals per sample", self.totals())], text=self._repr_text())


def monitor(target: Any, interval: float = 2.0, duration: float | None = None) -> Monitor:
    """Start sampling ``target``'s process tree every ``interval`` s (for ``duration`` s, or until stop())."""
    return Monitor(_roots_of(target), interval=interval, duration=duration)

