"""Plots where a reader wants a picture: each function takes the kit's own results (or their frames)
and returns a matplotlib :class:`~matplotlib.figure.Figure`.

Figures are built without pyplot's global state, so a cell that ends with a call shows the figure
once (notebooks) and the report embeds it as PNG (:func:`figure_png`). Input that has nothing to
plot raises :class:`~k3snb.errors.InvalidParameter` naming what was expected.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidParameter

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["figure_png", "plot_death_rates", "plot_env_diff", "plot_overhead", "plot_resources", "plot_stages"]

BENCHMARKS = Path(__file__).resolve().parents[2] / "data" / "benchmarks"
STATUS_COLOURS = {"ok": "#4caf50", "reached": "#4caf50", "passed": "#4caf50", True: "#4caf50",
                  "failed": "#e53935", "not reached": "#cfd2d6", False: "#cfd2d6", "n/a": "#ffffff",
                  "skipped": "#ffffff", None: "#ffffff"}


def _figure(w: float, h: float) -> Figure:
    from matplotlib.figure import Figure

    class KitFigure(Figure):
        """A Figure that shows itself as PNG in any kernel (no ``%matplotlib inline`` needed)."""

        def _repr_png_(self) -> bytes:
            return figure_png(self)

    return KitFigure(figsize=(w, h), layout="constrained")


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (what the report embeds)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# -- stability ----------------------------------------------------------------------------------------


def _stability_frame(data: Any) -> pd.DataFrame:
    import pandas as pd

    if hasattr(data, "trials") and hasattr(data, "to_frame"):  # StabilityResult
        return data.to_frame()
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, Sequence) and data and all(isinstance(r, Mapping) for r in data):
        return pd.DataFrame(list(data))
    raise InvalidParameter(f"cannot plot death rates of {type(data).__name__}",
                           hint="pass a StabilityResult (stability_trial, load_study) or a frame with "
                                "columns config, sandboxes, deaths")


def plot_death_rates(data: Any, confidence: float = 0.95, title: str | None = None) -> Figure:
    """Sandbox death rate per configuration with its one-sided exact upper confidence bound.

    Args:
        data: a :class:`~k3snb.runners.stability.StabilityResult`, a mapping ``{label: result}`` (one
            colour each, e.g. this run vs the stored study), or a frame with ``config``, ``sandboxes``,
            ``deaths`` columns.
        confidence: of the Clopper–Pearson upper bound (the verdicts use 0.95).

    Bounds are per configuration, never pooled: each bar says "d of n died; the rate is below u".
    """
    from ..runners.stability import upper_bound

    series = data if isinstance(data, Mapping) else {"": data}
    frames = {label: _stability_frame(d) for label, d in series.items()}
    for label, f in frames.items():
        missing = {"config", "sandboxes", "deaths"} - set(f.columns)
        if missing:
            raise InvalidParameter(f"stability frame {label!r} lacks columns {sorted(missing)}",
                                   hint="pass StabilityResult.to_frame() or a StabilityResult")
    configs = list(dict.fromkeys(c for f in frames.values() for c in f["config"]))
    if not configs:
        raise InvalidParameter("no configurations to plot", hint="run stability_trial first")
    # one panel per series, each with its own scale: 2 sandboxes bound the rate at 78 %, 240 at 1.2 %
    fig = _figure(4.6 * len(frames) + 2.2, 0.42 * len(configs) + 1.5)
    axes = fig.subplots(1, len(frames), sharey=True, squeeze=False)[0]
    for i, (ax, (label, f)) in enumerate(zip(axes, frames.items(), strict=True)):
        by = {r["config"]: r for r in f.to_dict(orient="records")}
        ys, rates, ups, notes = [], [], [], []
        for j, c in enumerate(configs):
            r = by.get(c)
            if r is None or not r["sandboxes"]:
                continue
            n, d = int(r["sandboxes"]), int(r["deaths"])
            ub = upper_bound(d, n, confidence)
            ys.append(j)
            rates.append(d / n * 100)
            ups.append(ub * 100)
            notes.append(f"{d}/{n}, < {ub:.1%}")
        ax.barh(ys, rates, height=0.6, color=f"C{i}", alpha=0.85)
        ax.errorbar(rates, ys, xerr=[[0] * len(ys), [u - r for u, r in zip(ups, rates, strict=True)]],
                    fmt="none", ecolor="black", capsize=3, lw=1)
        for y, u, note in zip(ys, ups, notes, strict=True):
            ax.text(u, y, f"  {note}", va="center", fontsize=8)
        ax.set_xlim(0, max([5.0, *ups]) * 1.6)
        ax.set_xlabel(f"died (%), bar to the {confidence:.0%} upper bound")
        if label:
            ax.set_title(str(label), fontsize=10)
    axes[0].set_yticks(range(len(configs)), configs)
    axes[0].invert_yaxis()
    fig.suptitle(title or "sandbox death rate per configuration (one-sided exact bound per configuration)")
    return fig


# -- interceptor overhead -----------------------------------------------------------------------------


def _trace_docs(source: Any) -> dict[str, dict]:
    """``{environment: trace benchmark doc}`` from a path, a folder, a doc or a mapping of docs."""
    if source is None:
        source = BENCHMARKS
    if isinstance(source, Mapping) and "results" in source:
        return {str(source.get("where") or "run"): dict(source)}
    if isinstance(source, Mapping):
        return {str(k): (v if isinstance(v, Mapping) else json.loads(Path(v).read_text())) for k, v in source.items()}
    p = Path(source)
    files = sorted(p.glob("trace-*.json")) if p.is_dir() else [p]
    docs = {}
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise InvalidParameter(f"cannot read trace benchmark {f}: {e}",
                                   hint="pass a data/benchmarks/trace-<env>.json written by benchmarks/bench_trace.py"
                                   ) from None
        if isinstance(doc, dict) and "results" in doc:
            docs[f.stem.removeprefix("trace-")] = doc
    if not docs:
        raise InvalidParameter(f"no trace benchmark results in {p}",
                               hint="pass data/benchmarks/ or a trace-<env>.json (benchmarks/bench_trace.py writes them)")
    return docs


def overhead_frame(source: Any = None) -> pd.DataFrame:
    """One row per environment, workload and tool: ``ratio`` (median / untraced median) and ``spread``
    (stddev / untraced median), from the trace benchmarks (default: every data/benchmarks/trace-*.json)."""
    import pandas as pd

    rows = []
    for env, doc in _trace_docs(source).items():
        for workload, tools in doc["results"].items():
            base = (tools.get("untraced") or {}).get("median_s")
            for tool, r in tools.items():
                if tool == "untraced" or not isinstance(r, Mapping) or r.get("ratio") is None:
                    continue
                spread = r["stddev_s"] / base if base and r.get("stddev_s") is not None else 0.0
                rows.append({"environment": env, "workload": workload, "tool": tool,
                             "ratio": float(r["ratio"]), "spread": spread})
    return pd.DataFrame(rows, columns=["environment", "workload", "tool", "ratio", "spread"])


def plot_overhead(source: Any = None, tools: Sequence[str] | None = None) -> Figure:
    """Slowdown of each tracer/interceptor against the untraced run, per workload, one panel per environment.

    Args:
        source: a trace benchmark JSON, a folder of them, a loaded doc or ``{env: doc|path}``;
            default every ``data/benchmarks/trace-*.json`` of the checkout.
        tools: the tools to show (default all the benchmark measured), in this order.
    """
    df = overhead_frame(source)
    if tools is not None:
        unknown = set(tools) - set(df["tool"])
        if unknown:
            raise InvalidParameter(f"unknown tool(s) {sorted(unknown)}; valid: {', '.join(sorted(set(df['tool'])))}")
        df = df[df["tool"].isin(tools)]
    envs = list(dict.fromkeys(df["environment"]))
    order = list(tools) if tools is not None else list(dict.fromkeys(df["tool"]))
    fig = _figure(4.2 * len(envs) + 1, 4.2)
    axes = fig.subplots(1, len(envs), sharey=True, squeeze=False)[0]
    for ax, env in zip(axes, envs, strict=True):
        sub = df[df["environment"] == env]
        workloads = list(dict.fromkeys(sub["workload"]))
        width = 0.8 / max(1, len(order))
        for i, tool in enumerate(order):
            t = sub[sub["tool"] == tool].set_index("workload").reindex(workloads)
            xs = [k + (i - (len(order) - 1) / 2) * width for k in range(len(workloads))]
            ax.bar(xs, t["ratio"], width=width * 0.95, yerr=t["spread"], capsize=2, color=f"C{i % 10}",
                   label=tool, error_kw={"lw": 0.8})
        ax.set_xticks(range(len(workloads)), workloads)
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_title(env)
    axes[0].set_ylabel("time / untraced time (log)")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("tracing and interception overhead per workload")
    return fig


# -- stages reached -----------------------------------------------------------------------------------


def is_attempt_rows(value: Any) -> bool:
    """Rows of container/pod attempts as the runtime experiments record them: ``env`` plus the last
    stage ``reached`` and the ``failed_stage`` (k3snb.runtime.experiments.attempt_row)."""
    return (isinstance(value, Sequence) and not isinstance(value, str) and bool(value)
            and all(isinstance(r, Mapping) and "env" in r and ("reached" in r or "failed_stage" in r) for r in value))


def _attempt_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Attempt rows -> long frame (environment, stage, status) in the kit's stage order."""
    import pandas as pd

    from ..runtime.stages import STAGES

    out = []
    for r in rows:
        label = " · ".join(str(r[k]) for k in ("env", "runtime", "via") if r.get(k))
        reached, failed = r.get("reached"), r.get("failed_stage")
        last = STAGES.index(reached) if reached in STAGES else -1
        for i, st in enumerate(STAGES):
            status = "failed" if st == failed else ("ok" if i <= last else "not reached")
            out.append({"environment": label, "stage": st, "status": status})
    return pd.DataFrame(out, columns=["environment", "stage", "status"])


def _stage_frame(data: Any, stages: Sequence[str] | None) -> pd.DataFrame:
    """A wide frame: index environment, one column per stage, values statuses."""
    import pandas as pd

    if isinstance(data, Mapping) and data and all(hasattr(v, "stages") for v in data.values()):  # {env: Attempt}
        data = pd.DataFrame([{"environment": k, "stage": s["stage"], "status": s["status"]}
                             for k, a in data.items() for s in a.stages])
    elif is_attempt_rows(data):
        data = _attempt_frame(data)
    if not isinstance(data, pd.DataFrame):
        raise InvalidParameter(f"cannot plot stages of {type(data).__name__}",
                               hint="pass a DataFrame (index environment, columns stages; or long columns "
                                    "environment, stage, status) or {environment: runtime Attempt}")
    if {"stage", "status"} <= set(data.columns):
        env_col = next((c for c in ("environment", "env", "runner") if c in data.columns), None)
        if env_col is None:
            raise InvalidParameter("a long stage frame needs an environment (or env/runner) column")
        wide = data.pivot_table(index=env_col, columns="stage", values="status", aggfunc="last", sort=False)
        wide = wide.reindex(list(dict.fromkeys(data[env_col])))
        wide = wide[list(dict.fromkeys(s for s in data["stage"] if s in wide.columns))]
    else:
        wide = data
    if stages is not None:
        wide = wide.reindex(columns=list(stages))
    if wide.empty:
        raise InvalidParameter("no stages to plot", hint="pass at least one environment with one stage")
    return wide


def _status_of(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return bool(v)
    return str(v)


def plot_stages(data: Any, stages: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Heat map of the stages each environment reached: green ok/reached, red failed, grey not reached,
    white not applicable or not run.

    Args:
        data: a wide DataFrame (index environment, columns stages, values status strings or booleans), a
            long one (columns environment|env|runner, stage, status), ``{environment: runtime Attempt}``,
            or attempt rows as the runtime experiments record them (env, runtime, via, reached, failed_stage).
        stages: column order (default: as given).
    """
    from matplotlib.colors import to_rgb

    wide = _stage_frame(data, stages)
    envs, cols = [str(i) for i in wide.index], [str(c) for c in wide.columns]
    grid = [[_status_of(v) for v in row] for row in wide.itertuples(index=False)]
    rgb = [[to_rgb(STATUS_COLOURS.get(v, "#90caf9")) for v in row] for row in grid]
    fig = _figure(max(6.0, 0.75 * len(cols) + 2.5), 0.5 * len(envs) + 1.8)
    ax = fig.add_subplot()
    ax.imshow(rgb, aspect="auto")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            mark = {True: "✔", False: "·", "ok": "✔", "reached": "✔", "passed": "✔", "failed": "✘",
                    "not reached": "·", None: ""}.get(v, str(v)[:6])
            ax.text(j, i, mark, ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(envs)), envs)
    ax.set_xticks([x - 0.5 for x in range(1, len(cols))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(envs))], minor=True)
    ax.grid(which="minor", color="white", lw=2)
    ax.tick_params(which="minor", length=0)
    ax.set_title(title or "stages reached per environment")
    return fig


# -- resources over time ------------------------------------------------------------------------------


def _totals(samples: Any) -> pd.DataFrame:
    import pandas as pd

    if hasattr(samples, "totals"):  # a Monitor
        return samples.totals()
    if isinstance(samples, pd.DataFrame):
        if "pid" in samples.columns:  # Monitor.to_frame(): one row per process per sample
            g = samples.groupby("t")
            return pd.DataFrame({"cpu_percent": g["cpu_percent"].sum(), "rss_bytes": g["rss_bytes"].sum()}).reset_index()
        if {"t", "rss_bytes", "cpu_percent"} <= set(samples.columns):
            return samples
    if isinstance(samples, Sequence) and samples and all(isinstance(r, Mapping) for r in samples):
        return _totals(pd.DataFrame(list(samples)))
    raise InvalidParameter(f"cannot plot resources of {type(samples).__name__}",
                           hint="pass a Monitor (k3snb.monitor), its to_frame()/totals(), or recorded samples")


def plot_resources(samples: Any, title: str | None = None) -> Figure:
    """Memory (RSS, MiB) and CPU (%) of a process tree over time; ``{label: samples}`` overlays several.

    Args:
        samples: a :class:`~k3snb.monitoring.Monitor`, its ``to_frame()`` or ``totals()``, the records of
            either, or a mapping ``{label: any of those}`` (e.g. one per k3s profile).
    """
    series = samples if isinstance(samples, Mapping) and not {"t", "rss_bytes"} <= set(samples) else {"": samples}
    totals = {label: _totals(s) for label, s in series.items()}
    if all(t.empty for t in totals.values()):
        raise InvalidParameter("no samples to plot", hint="let the monitor run for at least one interval")
    fig = _figure(8, 4.6)
    mem, cpu = fig.subplots(2, 1, sharex=True)
    for i, (label, t) in enumerate(totals.items()):
        mem.plot(t["t"], t["rss_bytes"] / 2**20, color=f"C{i}", label=label or None)
        cpu.plot(t["t"], t["cpu_percent"], color=f"C{i}", label=label or None)
    mem.set_ylabel("RSS (MiB)")
    cpu.set_ylabel("CPU (%)")
    cpu.set_xlabel("seconds")
    if len(totals) > 1:
        mem.legend(fontsize=8)
    mem.set_title(title or "process tree resources over time")
    return fig


# -- environment diff ---------------------------------------------------------------------------------


def plot_env_diff(diff: Any, max_facts: int = 40, title: str | None = None) -> Figure:
    """The facts that differ between environments as one compact grid (a row per fact, a column per
    environment); equal values share a colour, missing/False ones are grey.

    Args:
        diff: a :class:`~k3snb.probing.ProbeDiff` (``k3snb.diff(a, b, ...)``) or a sequence of probes.
    """
    if not hasattr(diff, "labels") or not hasattr(diff, "to_frame"):
        if isinstance(diff, Sequence) and not isinstance(diff, str) and len(diff) >= 2:
            from ..probing import diff as probe_diff

            diff = probe_diff(*diff)
        else:
            raise InvalidParameter(f"cannot plot an environment diff of {type(diff).__name__}",
                                   hint="pass k3snb.diff(probe_a, probe_b, ...) or a list of 2+ probes")
    df = diff.to_frame()
    labels = list(diff.labels)
    if df.empty:
        raise InvalidParameter("the environments do not differ in any probed fact", hint="nothing to plot")
    df = df.head(max_facts)
    from matplotlib.colors import to_rgb

    palette = ["#bbdefb", "#ffe0b2", "#d1c4e9", "#c8e6c9", "#f8bbd0", "#fff9c4"]
    grey = "#e0e0e0"
    cells, colours = [], []
    for row in df.to_dict(orient="records"):
        values = [row[lb] for lb in labels]
        distinct = list(dict.fromkeys(json.dumps(v, sort_keys=True, default=str) for v in values))
        texts, cols = [], []
        for v in values:
            s = v if isinstance(v, str) else json.dumps(v, default=str)
            texts.append(s if len(s) <= 28 else s[:27] + "…")
            absent = v in (None, False, "", "absent", "(not probed)") or (isinstance(v, dict) and v.get("present") is False)
            k = distinct.index(json.dumps(v, sort_keys=True, default=str))
            cols.append(to_rgb(grey if absent else palette[k % len(palette)]))
        cells.append(texts)
        colours.append(cols)
    fig = _figure(2.2 + 2.6 * len(labels), 0.28 * len(df) + 1.2)
    ax = fig.add_subplot()
    ax.axis("off")
    table = ax.table(cellText=cells, cellColours=colours, rowLabels=[str(f) for f in df["fact"]], colLabels=labels,
                     loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    table.scale(1, 1.15)
    more = len(diff.differing) - len(df)
    ax.set_title((title or f"{len(diff.differing)} facts differ between {', '.join(labels)}")
                 + (f" (first {len(df)})" if more > 0 else ""), fontsize=10)
    return fig


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write a figure (PNG/SVG/PDF by suffix) and return the path."""
    fig.savefig(path)
    return Path(path)
