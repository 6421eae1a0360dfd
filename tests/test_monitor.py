"""The psutil sampler on real process trees."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from k3snb.errors import InvalidParameter
from k3snb.monitoring import monitor


def test_samples_a_growing_process_tree(tmp_path):
    code = ("import subprocess, sys, time\n"
            "kids = [subprocess.Popen([sys.executable, '-c', 'import time; x = bytearray(30 << 20); time.sleep(30)'])"
            " for _ in range(2)]\n"
            "time.sleep(30)\n")
    p = subprocess.Popen([sys.executable, "-c", code])
    try:
        with monitor(p.pid, interval=0.3) as m:
            time.sleep(2.5)
        df = m.to_frame()
        tot = m.totals()
        assert not m.running
        assert set(df["pid"]) >= {p.pid} and df["pid"].nunique() >= 3  # root + two children
        assert (df.loc[df["pid"] != p.pid, "ppid"] == p.pid).all()
        assert tot["processes"].max() >= 3
        assert tot["rss_bytes"].max() > 60 * 2**20  # two children each hold 30 MiB
        s = m.summary()
        assert s["samples"] >= 3 and s["peak_rss_mb"] > 60
        fig = m.plot()
        assert fig.axes and len(fig.axes[0].lines) == 1
        assert "<table" in m._repr_html_()
    finally:
        p.kill()
        p.wait()


def test_process_exit_ends_rows_not_the_sampler():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6)"])
    m = monitor(p.pid, interval=0.2, duration=2.0)
    p.wait()
    time.sleep(2.5)
    assert not m.running
    df = m.to_frame()
    assert len(df) >= 1 and df["t"].max() < 1.5


def test_bad_target_and_interval():
    with pytest.raises(InvalidParameter):
        monitor("nonsense")
    with pytest.raises(InvalidParameter):
        monitor(1, interval=0)
