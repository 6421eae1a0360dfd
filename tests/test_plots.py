"""Plot functions (k3snb.report.plots) on the kit's real data: the stored stability study, the trace
benchmarks, the stored probes, a live monitor; each checks that the picture says what the data says."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

import k3snb
from k3snb.errors import InvalidParameter
from k3snb.report import plots
from k3snb.runners.stability import load_study, upper_bound

ROOT = Path(__file__).resolve().parents[1]


def test_death_rates_bound_per_configuration():
    study = load_study()
    frame = study.to_frame()
    fig = plots.plot_death_rates(study)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(frame["config"])
    notes = [t.get_text().strip() for t in ax.texts]
    for r in frame.itertuples():  # one bound per configuration, never pooled
        assert f"{r.deaths}/{r.sandboxes}, < {upper_bound(r.deaths, r.sandboxes):.1%}" in notes
    # a configuration with deaths shows a bar of its rate
    deaths = pd.DataFrame([{"config": "a", "sandboxes": 10, "deaths": 3}, {"config": "b", "sandboxes": 10, "deaths": 0}])
    two = plots.plot_death_rates({"this run": deaths, "study": frame})
    assert [a.get_title() for a in two.axes] == ["this run", "study"]  # one scale per series
    widths = [p.get_width() for p in two.axes[0].patches]
    assert pytest.approx(30.0) in widths
    assert len(plots.figure_png(fig)) > 5_000
    assert fig._repr_png_().startswith(b"\x89PNG")  # a cell ending in the call shows a PNG in any kernel
    with pytest.raises(InvalidParameter, match="lacks columns"):
        plots.plot_death_rates(pd.DataFrame([{"config": "x"}]))


def test_overhead_from_trace_benchmarks():
    bench = ROOT / "data" / "benchmarks"
    df = plots.overhead_frame(bench)
    host = json.loads((bench / "trace-host.json").read_text())
    want = host["results"]["files"]["k3snb intercept (seccomp)"]["ratio"]
    got = df[(df.environment == "host") & (df.workload == "files") & (df.tool == "k3snb intercept (seccomp)")]
    assert got["ratio"].tolist() == [want]
    fig = plots.plot_overhead(bench, tools=["strace -f", "k3snb intercept (seccomp)"])
    panels = [a for a in fig.axes if a.get_title()]
    assert sorted(a.get_title() for a in panels) == sorted(df["environment"].unique())
    for a in panels:  # one bar per workload and tool
        assert len(a.patches) == 2 * len(host["results"])
    with pytest.raises(InvalidParameter, match="unknown tool"):
        plots.plot_overhead(bench, tools=["no-such-tool"])
    with pytest.raises(InvalidParameter, match="no trace benchmark"):
        plots.plot_overhead(ROOT / "tests")


def test_stages_heat_map_colours_follow_status():
    long = pd.DataFrame([
        {"environment": "host", "stage": "runtime_up", "status": "ok"},
        {"environment": "host", "stage": "runtime_init", "status": "ok"},
        {"environment": "gVisor 2024", "stage": "runtime_up", "status": "ok"},
        {"environment": "gVisor 2024", "stage": "runtime_init", "status": "failed"},
    ])
    fig = plots.plot_stages(long)
    ax = fig.axes[0]
    img = ax.images[0].get_array()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["host", "gVisor 2024"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["runtime_up", "runtime_init"]
    red, green = (0.898, 0.224, 0.208), (0.298, 0.686, 0.314)
    assert tuple(round(float(x), 3) for x in img[1][1][:3]) == red
    assert tuple(round(float(x), 3) for x in img[0][1][:3]) == green
    wide = pd.DataFrame({"a": [True, False]}, index=["x", "y"])
    assert plots.plot_stages(wide, stages=["a"]).axes[0].images
    with pytest.raises(InvalidParameter):
        plots.plot_stages([1, 2])


def test_resources_from_a_live_monitor():
    m = k3snb.monitor(os.getpid(), interval=0.2)
    time.sleep(1.0)
    m.stop()
    tot = m.totals()
    fig = plots.plot_resources(m)
    mem, cpu = fig.axes
    assert list(mem.lines[0].get_xdata()) == list(tot["t"])
    assert list(mem.lines[0].get_ydata()) == pytest.approx(list(tot["rss_bytes"] / 2**20))
    two = plots.plot_resources({"a": m, "b": m.to_frame()})
    assert len(two.axes[0].lines) == 2
    with pytest.raises(InvalidParameter, match="cannot plot resources"):
        plots.plot_resources("nope")


def test_env_diff_of_stored_probes():
    probes = [ROOT / "data" / "probes" / f"{x}.json" for x in ("host", "gvisor-2022", "gvisor-2024")]
    d = k3snb.diff(*probes)
    fig = plots.plot_env_diff(d, max_facts=15)
    table = fig.axes[0].tables[0]
    cells = table.get_celld()
    row_labels = [cells[(i, -1)].get_text().get_text() for i in range(1, 16)]
    assert row_labels == d.differing[:15]
    assert "kernel.release" in row_labels
    assert len(plots.plot_env_diff([probes[1], probes[2]]).axes[0].tables[0].get_celld()) > 0


@pytest.mark.root
def test_stages_of_real_attempt_rows():
    """Attempt rows as the runtime notebooks record them (a real runc container on the host, plus the
    same row cut short) become one heat-map row each, in the kit's stage order."""
    from k3snb.runtime import run_container
    from k3snb.runtime.experiments import attempt_row
    from k3snb.runtime.stages import STAGES

    with k3snb.get_runner("host") as r:
        ran = attempt_row("host", run_container(r, "busybox", ["echo", "hi"], runtime="runc", via="direct"))
    cut = {**ran, "env": "cut", "reached": STAGES[2], "failed_stage": STAGES[3]}
    assert plots.is_attempt_rows([ran, cut])
    ax = plots.plot_stages([ran, cut]).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(STAGES)
    img = ax.images[0].get_array()
    green, red, grey = (0.298, 0.686, 0.314), (0.898, 0.224, 0.208), (0.812, 0.824, 0.839)
    colour = lambda i, j: tuple(round(float(x), 3) for x in img[i][j][:3])  # noqa: E731
    assert all(colour(0, j) == green for j in range(len(STAGES)))  # the container ran: every stage
    assert [colour(1, j) for j in range(5)] == [green, green, green, red, grey]
