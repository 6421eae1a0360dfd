"""Pod start and pod churn over CRI, host vs gVisor 2024, side by side in one run.

* start: RunPodSandbox → first container CONTAINER_RUNNING, from the CRI call timeline the kit records
  inside the runner (so the cost of reaching the runner is not counted); one busybox container, the
  pod network (bridge + host-local; in gVisor the kit's link-mode plugin, see k3snb.pods).
* churn: create + delete pods one after another for ``--churn`` seconds per environment (environments
  interleaved), then check that nothing leaked: containerd shims and pause/container processes,
  pod netns mounts, veths, host-local addresses, cgroup dirs (host).

Writes data/benchmarks/pod-start.json: medians, the gVisor/host ratio (goal ≤ 3×) and churn leak counts.

Usage: python benchmarks/bench_pod.py [-n N] [--churn SECONDS]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

from k3snb.pods import PodRuntime

DATA = Path(__file__).resolve().parent.parent / "data" / "benchmarks"
GOAL = 3.0
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench"},
       "spec": {"terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "600"]}]}}


def start_seconds(events: list[dict]) -> float | None:
    t0 = next((e["t"] for e in events if e.get("call") == "RunPodSandbox" and e.get("ok")), None)
    t1 = next((e["t"] for e in events if e["kind"] == "state" and e.get("object") == "c"
               and e.get("state") == "CONTAINER_RUNNING"), None)
    return None if t0 is None or t1 is None else t1 - t0


def one_pod(rt: PodRuntime, i: int) -> float | None:
    m = json.loads(json.dumps(POD))
    m["metadata"]["name"] = f"bench-{i}"
    p = rt.pod(m)
    with p:
        pass
    return start_seconds(p.events())


def footprint(rt: PodRuntime) -> dict:
    """What pods leave in the runner: shim/pause processes, netns mounts, veths, IPs, cgroup dirs."""
    # [c]: the pattern must not match this shell's own command line
    script = (f"echo shims=$(pgrep -c -f '[c]ontainerd-shim.*{rt.base}'); "
              f"echo netns=$(grep -c '{rt.base}/state/io.containerd.grpc.v1.cri/netns' /proc/self/mountinfo); "
              "echo veths=$(ip -o link show 2>/dev/null | grep -c ' k3v'); "
              "echo procs=$(ps -eo args | grep -c -E '^(/pause|sleep 600)')")
    out = rt.runner.run(["/bin/sh", "-c", script], timeout=60).stdout
    d = {k: int(v or 0) for k, v in (line.split("=", 1) for line in out.split())}
    d["host_local_ips"] = len(rt.ipam_allocations())
    if rt.runner.capabilities.has_real_cgroups:
        d["cgroup_dirs"] = sum(1 for c in Path("/sys/fs/cgroup").glob(f"*{rt.cgroup_parent}/*") if c.is_dir())
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=8, help="pod starts per environment (default 8)")
    ap.add_argument("--churn", type=float, default=120.0, help="seconds of create+delete per environment")
    args = ap.parse_args()
    envs = {"host": PodRuntime("host"), "gvisor-2024": PodRuntime("gvisor", runsc="2024")}
    result: dict = {"benchmark": "pod-start", "date": dt.date.today().isoformat(),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "what": "RunPodSandbox -> first container running (CRI timeline inside the runner)",
                    "goal_ratio": GOAL, "environments": {}}
    try:
        for rt in envs.values():
            rt.start()
        starts: dict[str, list[float]] = {k: [] for k in envs}
        for i in range(args.n):  # interleaved: drift hits both alike
            for name, rt in envs.items():
                s = one_pod(rt, i)
                if s is not None:
                    starts[name].append(s)
        churn: dict[str, dict] = {}
        for name, rt in envs.items():
            churn[name] = {"before": footprint(rt), "cycles": 0, "failures": 0, "seconds": 0.0}
        t_end = {name: 0.0 for name in envs}
        i = 1000
        while any(t < args.churn for t in t_end.values()):
            for name, rt in envs.items():
                if t_end[name] >= args.churn:
                    continue
                t0 = time.monotonic()
                try:
                    one_pod(rt, i)
                    churn[name]["cycles"] += 1
                except Exception as e:  # counted, and the loop goes on: a leak check needs the runtime alive
                    churn[name]["failures"] += 1
                    churn[name].setdefault("errors", []).append(str(e)[:200])
                t_end[name] += time.monotonic() - t0
                i += 1
        for name, rt in envs.items():
            c = churn[name]
            c["seconds"] = round(t_end[name], 1)
            c["after"] = footprint(rt)
            c["leaked"] = {k: c["after"][k] - c["before"].get(k, 0) for k in c["after"]
                           if c["after"][k] != c["before"].get(k, 0)}
            c["cycles_per_min"] = round(60 * c["cycles"] / max(c["seconds"], 1e-9), 1)
            s = starts[name]
            result["environments"][name] = {
                "start_s": [round(x, 3) for x in s], "start_median_s": round(statistics.median(s), 3) if s else None,
                "runtime_startup_s": {st["stage"]: st["duration_s"] for st in rt.stages},
                "workarounds": [w["id"] for w in rt.workarounds], "churn": c}
    finally:
        for rt in envs.values():
            rt.stop()
    h = result["environments"]["host"]["start_median_s"]
    g = result["environments"]["gvisor-2024"]["start_median_s"]
    result["ratio_start_gvisor_over_host"] = round(g / h, 2) if h and g else None
    result["goal_met"] = bool(result["ratio_start_gvisor_over_host"] is not None
                              and result["ratio_start_gvisor_over_host"] <= GOAL)
    result["churn_leaks_nothing"] = all(not e["churn"]["leaked"] and not e["churn"]["failures"]
                                        for e in result["environments"].values())
    DATA.mkdir(parents=True, exist_ok=True)
    out = DATA / "pod-start.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio_start_gvisor_over_host", "goal_met", "churn_leaks_nothing")}))
    for name, e in result["environments"].items():
        print(f"{name:12} start median {e['start_median_s']}s  churn {e['churn']['cycles']} cycles "
              f"({e['churn']['cycles_per_min']}/min) leaked {e['churn']['leaked'] or 'nothing'}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
