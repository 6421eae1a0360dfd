"""psutil sampler: process-tree resource samples over time, as a DataFrame and a plot.

``monitor(target)`` starts a background thread that every ``interval`` seconds samples the tree of
each root pid (the root and all descendants): CPU %, RSS, threads, open fds. ``target`` is a pid, a
list of pids, a ``psutil.Process``, a spawned process handle, or a :class:`~k3snb.K3sCluster` (for
gVisor the host-side runsc sandbox processes — the sentry's resource use *is* k3s's).
"""

from __future__ import annotations

import contextlib
import sys
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
    if callable(getattr(target, "sandbox_pids", None)):  # a started runner: its sandbox's host processes
        return target.sandbox_pids
    if hasattr(target, "runner") and (hasattr(target, "proc") or hasattr(target, "_proc")):
        return lambda: _handle_roots(target)  # a daemon handle (containerd, a pod runtime): spawned in a runner
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


def _handle_roots(target: Any) -> list[int]:
    """The host processes of a daemon a handle spawned in its runner: the spawn's host client, and for a
    sandboxed runner the sandbox's host processes (the daemon's resource use is the sandbox's)."""
    pids: list[int] = []
    proc = getattr(target, "proc", None) or getattr(target, "_proc", None)
    for attr in ("client", "popen"):
        pid = getattr(getattr(proc, attr, None), "pid", None)
        if isinstance(pid, int):
            pids.append(pid)
            break
    with contextlib.suppress(Exception):
        pids += [p for p in target.runner.sandbox_pids() if p not in pids]
    return pids


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



# -- live views --------------------------------------------------------------------------------------
#
# One machinery for every handle with pids and a log: ``watch(handle)`` (or ``handle.watch()``) shows the
# process tree, CPU/memory sparklines and the latest classified log lines. With a JupyterLab front end it
# is an ipywidgets view refreshed every ``interval`` until the cell is interrupted; in papermill/nbval
# (no front end) and outside a kernel it samples briefly and leaves one static snapshot. Either way the
# output that stays in the notebook is the final snapshot (HTML + a text fallback), never a stale widget.


def frontend() -> bool:
    """True when a cell's output is being watched live (JupyterLab / Notebook 7), False in papermill,
    nbval, a plain interpreter. ``K3SNB_LIVE=1``/``0`` overrides."""
    import os
    import sys

    forced = os.environ.get("K3SNB_LIVE")
    if forced in ("0", "1"):
        return forced == "1"
    if "ipykernel" not in sys.modules or os.environ.get("K3SNB_RESULTS") or os.environ.get("K3SNB_RUN_TAG"):
        return False  # not a kernel, or a kernel `k3snb run` started through papermill
    try:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
        parent = kernel.get_parent() if kernel is not None else {}
    except Exception:
        return False
    # JupyterLab and Notebook 7 send the cell id with every execute request; nbclient (papermill, nbval) does not
    return bool((parent or {}).get("metadata", {}).get("cellId"))


def sparkline(values: list[float], width: int = 160, height: int = 28, colour: str = "#1f77b4") -> str:
    """An inline SVG polyline of ``values`` (no JavaScript, no external file)."""
    vals = [float(v) for v in values if v is not None][-120:]
    if not vals:
        return f"<svg width='{width}' height='{height}'></svg>"
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    step = width / max(1, len(vals) - 1)
    pts = " ".join(f"{i * step:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}" for i, v in enumerate(vals))
    return (f"<svg class='k3snb-spark' width='{width}' height='{height}' viewBox='0 0 {width} {height}'>"
            f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{pts}'/></svg>")


def _log_source(target: Any, log: Any) -> Callable[[int], list[str]] | None:
    """A function n -> the last n log lines, from ``log`` (path, callable) or the target's log path."""
    import os
    from pathlib import Path

    if log is None:
        for attr in ("log_path", "log"):
            v = getattr(target, attr, None)
            if callable(v) and attr == "log":
                continue
            if isinstance(v, str | os.PathLike) and str(v):
                log = v
                break
    if log is None:
        return None
    if callable(log):
        def from_callable(n: int) -> list[str]:
            text = log()
            lines = text.splitlines() if isinstance(text, str) else [str(x) for x in text]
            return lines[-n:]

        return from_callable
    path = Path(log)

    def tail(n: int) -> list[str]:
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                data = f.read()
        except OSError:
            return []
        return data.decode("utf-8", "replace").splitlines()[-n:]

    return tail


@dataclass(repr=False)
class Watch(Rich):
    """A live (or finished) view of a process tree and its log; ``stop()`` ends the sampling.

    Its HTML is the latest snapshot: the tree, CPU/RSS sparklines and the last classified log lines.
    """

    monitor: Monitor
    log: Callable[[int], list[str]] | None = None
    lines: int = 8
    live: bool = False
    title: str = "watch"
    stopped: str = ""
    _title_text = "watch"

    def __post_init__(self) -> None:
        self._shown = False
        self._final_log: list[dict[str, Any]] | None = None

    def stop(self, why: str = "stopped") -> Watch:
        """End the sampling; the log lines of this moment stay with the view (the file may go away)."""
        self.monitor.stop()
        self.stopped = self.stopped or why
        if self._final_log is None:
            self._final_log = self._read_log()
        return self

    # content ----------------------------------------------------------------------------------------
    def tree(self) -> list[dict[str, Any]]:
        """The latest sample's processes in tree order, each with its ``depth``."""
        rows = list(self.monitor.rows)
        if not rows:
            return []
        last = max(r["t"] for r in rows)
        now = [r for r in rows if r["t"] == last]
        pids = {r["pid"] for r in now}
        kids: dict[int, list[dict[str, Any]]] = {}
        for r in now:
            kids.setdefault(r["ppid"] if r["ppid"] in pids else -1, []).append(r)
        out: list[dict[str, Any]] = []

        def walk(parent: int, depth: int) -> None:
            for r in sorted(kids.get(parent, []), key=lambda r: r["pid"]):
                out.append({**r, "depth": depth})
                walk(r["pid"], depth + 1)

        walk(-1, 0)
        return out

    def log_lines(self) -> list[dict[str, Any]]:
        """The last ``lines`` log lines, each with the signature ids the classifier found in it (as of
        ``stop()`` once stopped)."""
        if self._final_log is not None:
            return self._final_log
        return self._read_log()

    def _read_log(self) -> list[dict[str, Any]]:
        if self.log is None:
            return []
        lines = self.log(self.lines)
        found: dict[int, list[str]] = {}
        try:
            from .signatures import classify

            for m in classify(lines).matches:
                found.setdefault(m["line"], []).append(m["id"])
        except Exception:  # the view must not die on a classifier problem
            pass
        return [{"text": t, "signatures": found.get(i + 1, [])} for i, t in enumerate(lines)]

    def summary(self) -> dict[str, Any]:
        s = self.monitor.summary()
        out = {"processes": len(self.tree()), "samples": s["samples"], "peak_rss_mb": s["peak_rss_mb"]}
        if self.stopped:
            out["stopped"] = self.stopped
        return out

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.tree(), columns=["depth", "pid", "ppid", "name", "cpu_percent", "rss_bytes",
                                                  "threads"])

    def _repr_text(self) -> str:
        tot = self.monitor.totals()
        lines = [f"{self.title}: {len(self.tree())} processes"
                 + (f", {tot['cpu_percent'].iloc[-1]:.0f}% CPU, {tot['rss_bytes'].iloc[-1] / 2**20:.0f} MiB"
                    if not tot.empty else "") + (f" ({self.stopped})" if self.stopped else "")]
        lines += [f"{'  ' * r['depth']}{r['pid']} {r['name']}" for r in self.tree()[:20]]
        lines += [(f"[{','.join(x['signatures'])}] " if x["signatures"] else "") + x["text"] for x in self.log_lines()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self._repr_text()

    def snapshot_html(self) -> str:
        from .report._html import esc

        tot = self.monitor.totals()
        cpu = list(tot["cpu_percent"]) if not tot.empty else []
        rss = [v / 2**20 for v in tot["rss_bytes"]] if not tot.empty else []
        tree = "".join(
            f"<tr><td style='padding-left:{8 + 14 * r['depth']}px'>{esc(r['name'])}</td><td>{r['pid']}</td>"
            f"<td>{r['cpu_percent']:.0f}%</td><td>{r['rss_bytes'] / 2**20:.1f} MiB</td></tr>" for r in self.tree()[:40])
        logs = "".join(
            "<div class='k3snb-logline'>" + "".join(f"<span class='k3snb-sig'>{esc(s)}</span> " for s in x["signatures"])
            + f"<code>{esc(x['text'][:400])}</code></div>" for x in self.log_lines())
        state = "live" if self.live and not self.stopped else (self.stopped or "snapshot")
        body = (
            f"<div class='k3snb-watch'><div class='k3snb-title'>{esc(self.title)} <small>({esc(state)})</small></div>"
            f"<div class='k3snb-sparks'><span>CPU {cpu[-1] if cpu else 0:.0f}%</span> {sparkline(cpu, colour='#d62728')}"
            f" <span>RSS {rss[-1] if rss else 0:.0f} MiB</span> {sparkline(rss)}</div>"
            f"<table class='k3snb-table'><thead><tr><th>process</th><th>pid</th><th>CPU</th><th>RSS</th></tr></thead>"
            f"<tbody>{tree}</tbody></table>"
            + (f"<div class='k3snb-logs'>{logs}</div>" if logs else "") + "</div>")
        return (f"<style>{_watch_css()}</style><div class='k3snb-wrap'>"
                f"<pre class='k3snb-text-fallback'>{esc(self._repr_text())}</pre>"
                f"<div class='k3snb-rich' hidden>{body}</div></div>")

    def _repr_html_(self) -> str:
        return self.snapshot_html()

    def _ipython_display_(self) -> None:
        if self._shown:  # the live view already left its final snapshot in this cell's output
            return
        from IPython.display import display

        display({"text/plain": self._repr_text(), "text/html": self.snapshot_html()}, raw=True)


def _watch_css() -> str:
    from .report._html import _css

    return _css() + (" .k3snb-logline code{font-size:11px;white-space:pre-wrap}"
                     " .k3snb-sig{background:#fadbd8;border-radius:3px;padding:0 4px;font-size:11px}"
                     " .k3snb-sparks{display:flex;gap:8px;align-items:center}")


def _alive(pids: list[int]) -> bool:
    """Some root still runs (a zombie, exited but not yet reaped by its parent, does not count)."""
    import psutil

    for p in pids:
        try:
            if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            continue
    return False


def watch(
    target: Any,
    log: Any = None,
    *,
    interval: float = 1.0,
    duration: float | None = None,
    lines: int = 8,
    live: bool | None = None,
    title: str | None = None,
) -> Watch:
    """Watch a running handle (k3s cluster, containerd, a pod, a pid): process tree, CPU and memory
    sparklines and the latest classified log lines, refreshed every ``interval`` seconds.

    Args:
        target: anything :func:`monitor` accepts (a handle with ``root_pids()`` or ``pid``, pids).
        log: a log file path or a callable returning text/lines; default the target's ``log_path``/``log``.
        duration: stop after this many seconds (default: until the processes end or the cell is
            interrupted; without a front end, a ~3 s snapshot).
        live: force the live widget view (True) or the static snapshot (False); default :func:`frontend`.

    Returns:
        Watch: the finished view (its HTML is the last snapshot; ``.monitor`` holds every sample).
    """
    if interval <= 0:
        raise InvalidParameter(f"interval must be > 0, got {interval}", hint="e.g. interval=1.0")
    if lines < 0:
        raise InvalidParameter(f"lines must be >= 0, got {lines}")
    roots = _roots_of(target)
    live = frontend() if live is None else live
    w = Watch(Monitor(roots, interval=interval), _log_source(target, log), lines, live,
              title=title or (f"pid {target}" if isinstance(target, int)
                              else f"{type(target).__name__} {', '.join(map(str, roots()))}"))
    t0 = time.monotonic()
    budget = duration if duration is not None else (None if live else min(3 * interval, 3.0))
    handle = view = None
    if live:
        import ipywidgets
        from IPython.display import display

        view = ipywidgets.HTML(value=w.snapshot_html())
        handle = display(view, display_id=True)
    try:
        while True:
            time.sleep(min(interval, 0.25) if not live else interval)
            if view is not None:
                view.value = w.snapshot_html()
            if budget is not None and time.monotonic() - t0 >= budget:
                w.stopped = "duration reached" if duration is not None else "snapshot"
                break
            if not _alive(roots()):
                w.stopped = "processes ended"
                break
    except KeyboardInterrupt:
        w.stopped = "interrupted"
    finally:
        w.stop()
        if handle is not None:  # the saved notebook keeps the final snapshot, not a widget at its first frame
            handle.update({"text/plain": w._repr_text(), "text/html": w.snapshot_html()}, raw=True)
            w._shown = True
    return w


# -- run progress --------------------------------------------------------------------------------------
#
# Progress of a ``run_experiments`` batch, per experiment: running, passed, failed, skipped. In JupyterLab an
# ipywidgets bar and status table refresh as cells finish; in a kernel without a front end (papermill) one
# display is updated in place; on a terminal it is tqdm, in CI logs the caller prints one line per
# experiment. Whatever the mode, the output a notebook keeps is the final state with a text fallback —
# never a bar frozen at 0 %.


def _esc(v: Any) -> str:
    from .report._html import esc

    return esc(v)


_ICON = {"pending": "·", "running": "▶", "passed": "✔", "failed": "✘", "skipped": "∅"}


class RunProgress:
    """A tqdm-like progress view (``set_postfix_str``, ``update``, ``close``, ``disable``) that also
    knows each experiment's status (``start(name)``, ``done(row)``)."""

    def __init__(self, names: list[str], enabled: bool = True, desc: str = "experiments") -> None:
        self.names = list(names)
        self.status: dict[str, str] = dict.fromkeys(self.names, "pending")
        self.detail: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.n = 0
        self.desc = desc
        self.mode = _mode(enabled)
        self.disable = self.mode in ("off", "lines")  # callers print their own line per experiment then
        self._bar = self._handle = self._widget = None
        if self.mode == "tqdm":
            from tqdm import tqdm

            self._bar = tqdm(total=len(self.names), desc=desc, unit="cell", file=sys.stderr)
        elif self.mode in ("widget", "display"):
            from IPython.display import display

            if self.mode == "widget":
                import ipywidgets

                self._progress = ipywidgets.IntProgress(value=0, min=0, max=max(1, len(self.names)),
                                                        description=desc)
                self._table = ipywidgets.HTML(value=self._html(with_bar=False))
                self._widget = ipywidgets.VBox([self._progress, self._table])
                self._handle = display(self._widget, display_id=True)
            else:
                self._handle = display(self._bundle(), raw=True, display_id=True)

    # tqdm's interface ----------------------------------------------------------------------------
    def set_postfix_str(self, name: str) -> None:
        self.start(name)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._handle is not None:  # the final state replaces the widget in the saved notebook
            self._handle.update(self._bundle(), raw=True)

    # per experiment --------------------------------------------------------------------------------
    def start(self, name: str) -> None:
        if name in self.status:
            self.status[name] = "running"
            self.started[name] = time.monotonic()
            if self._bar is not None:
                self._bar.set_postfix_str(name)
            self._refresh()

    def done(self, row: dict[str, Any]) -> None:
        name = row.get("id", "")
        self.status[name] = row.get("status", "failed")
        verdicts = ", ".join(f"{row[k]} {k}" for k in ("reproduced", "refuted", "not-testable", "inconclusive")
                             if row.get(k))
        dur = f"{row['duration_s']:.0f} s" if isinstance(row.get("duration_s"), int | float) else ""
        self.detail[name] = "; ".join(x for x in (dur, verdicts, row.get("reason") or "") if x)
        self.update(1)

    # rendering -------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return {s: sum(1 for v in self.status.values() if v == s) for s in _ICON}

    def text(self) -> str:
        c = self.counts()
        total = len(self.names)
        finished = c["passed"] + c["failed"] + c["skipped"]
        pct = 100 if not total else round(100 * finished / total)
        lines = [f"{self.desc}: {finished}/{total} done ({pct} %): {c['passed']} passed, {c['failed']} failed"
                 + (f", {c['running']} running" if c["running"] else "")]
        lines += [f"  {_ICON[self.status[n]]} {n:32} {self.status[n]:8} {self.detail.get(n, '')}" for n in self.names]
        return "\n".join(lines)

    def _html(self, with_bar: bool = True) -> str:
        c = self.counts()
        total = len(self.names) or 1
        finished = c["passed"] + c["failed"] + c["skipped"]
        bar = (f"<progress value='{finished}' max='{total}' style='width:240px'></progress> "
               f"{finished}/{len(self.names)}") if with_bar else ""
        rows = "".join(
            f"<tr><td>{_ICON[self.status[n]]}</td><td>{_esc(n)}</td><td>{_esc(self.status[n])}</td>"
            f"<td>{_esc(self.detail.get(n, ''))}</td></tr>" for n in self.names)
        return f"<div>{bar}<table class='k3snb-table'><tbody>{rows}</tbody></table></div>"

    def _bundle(self) -> dict[str, str]:
        return {"text/plain": self.text(), "text/html": self._html()}

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.n = self.n
            self._bar.refresh()
        elif self.mode == "widget":
            self._progress.value = sum(1 for v in self.status.values() if v in ("passed", "failed", "skipped"))
            self._table.value = self._html(with_bar=False)
        elif self._handle is not None:
            self._handle.update(self._bundle(), raw=True)


def _mode(enabled: bool) -> str:
    if not enabled:
        return "off"
    if "ipykernel" in sys.modules:
        return "widget" if frontend() else "display"
    return "tqdm" if sys.stderr.isatty() else "lines"


def progress_view(names: list[str], enabled: bool = True, desc: str = "experiments") -> RunProgress:
    """The progress view for ``names`` (experiment cells), chosen for where the call runs."""
    return RunProgress(names, enabled, desc)
