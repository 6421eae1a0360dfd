"""Container start through the kit's runtimes, host vs gVisor 2024, side by side in one run.

Measures "image imported → output seen" for a busybox ``echo``: the stage times of
:class:`k3snb.runtime.Attempt` from ``layer_unpacked`` through ``exit_status`` (containerd: the
unpack check plus ``ctr run``; direct: rootfs extraction plus ``runc/crun run``). Per environment one
supervised containerd serves all its repeats (its start-up is reported separately); the
environments' repeats are interleaved so drift hits both alike. Writes
data/benchmarks/runtime-start.json with medians and the gVisor/host ratio per path (goal: ≤ 3× for
containerd+runc).

Usage: python benchmarks/bench_runtime.py [-n N] [--paths containerd+runc,containerd+crun,direct+runc]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
from pathlib import Path

from k3snb.runners.gvisor import GVisor
from k3snb.runners.host import Host
from k3snb.runtime import Containerd, run_direct
from k3snb.runtime.run import auto_rules, ensure_cgroups, loopback_ioctl_works

DATA = Path(__file__).resolve().parent.parent / "data" / "benchmarks"
PATHS = ("containerd+runc", "containerd+crun", "direct+runc")
GOAL = 3.0


def machine() -> dict:
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version()}


class Env:
    """One runner with what its paths need: cgroups, and one containerd per runtime."""

    def __init__(self, name: str, runner, stack: contextlib.ExitStack, paths: list[str]) -> None:
        self.name, self.runner = name, stack.enter_context(runner)
        self.cgroups = stack.enter_context(ensure_cgroups(self.runner, "v1" if any("crun" in p for p in paths)
                                                          else "auto"))
        self.ctd: dict[str, Containerd] = {}
        self.startup: dict[str, float | None] = {}
        for p in paths:
            via, rt = p.split("+")
            if via == "containerd":
                c = Containerd(self.runner, runtime=rt, rules=auto_rules(self.runner, rt))
                self.ctd[rt] = stack.enter_context(c)
                self.startup[p] = c.startup_s
        self.net_host = not loopback_ioctl_works(self.runner)

    def once(self, path: str) -> float | None:
        via, rt = path.split("+")
        if via == "containerd":
            a = self.ctd[rt].run("busybox", ["echo", "hi"], net_host=self.net_host and rt == "crun")
        else:
            a = run_direct(self.runner, "busybox", ["echo", "hi"], runtime=rt, rules=auto_rules(self.runner, rt))
        if not a.ok or a.stdout != "hi\n":
            raise RuntimeError(f"{self.name} {path}: {a.failed_stage} failed: {a.error}")
        return a.seconds("layer_unpacked", "exit_status")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5, help="repeats per environment and path (default 5)")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"comma list of {', '.join(PATHS)}")
    ap.add_argument("--out", "-o", default=str(DATA / "runtime-start.json"), help="result JSON FILE")
    args = ap.parse_args(argv)
    paths = [p for p in args.paths.split(",") if p]
    samples: dict[str, dict[str, list[float]]] = {}
    with contextlib.ExitStack() as stack:
        envs = [Env("host", Host(), stack, paths), Env("gvisor-2024", GVisor("2024"), stack, paths)]
        for e in envs:  # warm-up: first unpack of the image into each snapshotter
            for p in paths:
                e.once(p)
        for _ in range(args.n):
            for p in paths:
                for e in envs:
                    samples.setdefault(e.name, {}).setdefault(p, []).append(e.once(p))
        startup = {e.name: e.startup for e in envs}
        cgroups = {e.name: e.cgroups.get("mounted") for e in envs}
    rows = {}
    for p in paths:
        h, g = statistics.median(samples["host"][p]), statistics.median(samples["gvisor-2024"][p])
        rows[p] = {"host_median_s": round(h, 3), "gvisor2024_median_s": round(g, 3), "ratio": round(g / h, 2),
                   "host_s": samples["host"][p], "gvisor2024_s": samples["gvisor-2024"][p]}
    cr = rows.get("containerd+runc", {}).get("ratio")
    out = {"benchmark": "runtime-start", "metric": "image imported -> output seen (s), busybox echo",
           "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
           "n": args.n, "paths": rows, "containerd_startup_s": startup, "cgroups_mounted": cgroups,
           "goal": {"containerd+runc ratio <=": GOAL, "met": None if cr is None else cr <= GOAL}}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for p, r in rows.items():
        print(f"{p:18s} host {r['host_median_s']:.3f}s  gVisor 2024 {r['gvisor2024_median_s']:.3f}s  "
              f"ratio {r['ratio']:.2f}")
    print(f"goal containerd+runc <= {GOAL}x: {out['goal']['met']}  -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
