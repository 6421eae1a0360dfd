"""Overhead of tracing and interception: the kit's tracer/interceptor vs strace and proot.

One hyperfine invocation per workload measures every configuration (same machine state), on the
host and inside gVisor; ratios are median / untraced median of that same invocation.

    .venv/bin/python benchmarks/bench_trace.py [--runs 5] [--gvisor-runs 3] [--builds 2022] [--quick]

Writes data/benchmarks/trace-host.json, trace-gvisor-<build>.json and trace-summary.json.
Workloads (each behind ``sh -c``):

* files   — ``find`` over a tree                                    (metadata scan)
* procs   — N × ``/bin/true``                                     (fork/exec heavy)
* python  — N × ``python3 -c 'import json, email, http.client'``  (interpreter start-up, mixed)
* archive — ``tar cf - DIRS | wc -c``                              (read data + metadata, mixed)

Sizes differ between host and gVisor (``HOST_WORKLOADS`` / ``WORKLOADS``): gVisor's 9p makes the
same work 10-25x slower, and on the host small sizes would measure only tool start-up.

The kit's tracer writes its raw row stream (``--out x.rows``); converting that to Arrow happens
later in the analysis process (``k3snb.trace()`` does it) and is not part of these timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from k3snb.tracing._launch import tracer_argv

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "benchmarks"
# gVisor: sized so the whole matrix fits in ~5 min over 9p (untraced 0.25-0.6 s each)
WORKLOADS = {
    "files": "find /usr/include | wc -l",
    "procs": "for i in $(seq 100); do /bin/true; done",
    "python": "for i in 1 2 3; do /usr/bin/python3 -c 'import json, email, http.client'; done",
    "archive": "tar cf - /usr/include/linux /usr/include/x86_64-linux-gnu 2>/dev/null | wc -c",
}
# host: the same kinds of work, larger, so that a run is not just tool start-up (the gVisor
# sizes take 15-140 ms untraced on the host, where a Python tracer's ~70 ms start would dominate)
HOST_WORKLOADS = {
    "files": "find /usr -type f | wc -l",
    "procs": "for i in $(seq 400); do /bin/true; done",
    "python": "for i in 1 2 3 4 5 6; do /usr/bin/python3 -c 'import json, email, http.client'; done",
    "archive": "tar cf - /usr/include /usr/share/doc 2>/dev/null | wc -c",
}
MIXED = ("python", "archive")


def configs(py: str, fake: str, tmp: str) -> dict[str, list[str]]:
    kit = tracer_argv(py)
    icept = ["intercept", "--redirect", f"/proc/sys/kernel/cap_last_cap={fake}", "--statfs", "9p=ext4"]
    return {
        "untraced": [],
        "strace -f": ["strace", "-f", "-qq", "-o", "/dev/null"],
        "strace -f --seccomp-bpf": ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=%file", "-o", "/dev/null"],
        "proot -b": ["proot", "-b", f"{fake}:/proc/sys/kernel/cap_last_cap"],
        "k3snb trace (seccomp)": kit + ["trace", "-e", "%file", "--out", f"{tmp}/t.rows"],
        "k3snb trace (all stops)": kit + ["trace", "--no-seccomp", "-e", "%file", "--out", f"{tmp}/t.rows"],
        "k3snb intercept (seccomp)": kit + icept,
        "k3snb intercept (all stops)": kit + icept + ["--no-seccomp"],
    }


def hyperfine_args(prefix: list[str], workload: str) -> str:
    return shlex.join(prefix + ["sh", "-c", workload])


def bench(runs: int, tmp: str, py: str, fake: str, names: list[str] | None = None,
          workloads: dict[str, str] = WORKLOADS) -> dict:
    """Run hyperfine for every workload; returns {workload: {config: {median, ratio, ...}}}."""
    cfgs = configs(py, fake, tmp)
    out: dict = {}
    for w, cmd in workloads.items():
        js = Path(tmp) / f"hf-{w}.json"
        args = ["hyperfine", "-N", "--warmup", "1", "--runs", str(runs), "--export-json", str(js),
                "--ignore-failure", "--style", "none"]
        for name, prefix in cfgs.items():
            if names and name not in names:
                continue
            args += ["-n", name, hyperfine_args(prefix, cmd)]
        t0 = time.monotonic()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        res = json.loads(js.read_text())["results"]
        base = next(r["median"] for r in res if r["command"] == "untraced")
        out[w] = {r["command"]: {"median_s": round(r["median"], 4), "mean_s": round(r["mean"], 4),
                                 "stddev_s": round(r["stddev"] or 0.0, 4), "ratio": round(r["median"] / base, 2),
                                 "runs": len(r["times"])} for r in res}
        print(f"  {w}: {time.monotonic() - t0:.0f}s " + ", ".join(
            f"{k}={v['ratio']}x" for k, v in out[w].items()), file=sys.stderr, flush=True)
    return out


def goals(res: dict, where: str) -> dict:
    """The issue's goals, evaluated on what was measured (True/False per workload)."""
    g: dict = {}
    for w, r in res.items():
        ic = r.get("k3snb intercept (seccomp)", {}).get("median_s")
        pr = r.get("proot -b", {}).get("median_s")
        sb = r.get("strace -f --seccomp-bpf", {}).get("median_s")
        sf = r.get("strace -f", {}).get("median_s")
        if ic is None:
            continue
        entry = {"intercept_vs_proot": round(ic / pr, 2) if pr else None,
                 "intercept_vs_strace_seccomp": round(ic / sb, 2) if sb else None,
                 "not_slower_than_proot": bool(pr and ic <= pr)}
        if where == "host" and w in MIXED:
            entry["within_1.25x_strace_seccomp"] = bool(sb and ic <= 1.25 * sb)
        if where != "host":
            entry["beats_strace_and_proot"] = bool(sb and pr and sf and ic < min(sb, pr, sf))
        g[w] = entry
    return g


def versions() -> dict:
    def v(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()[0].strip()
        except Exception:
            return None

    return {"loadavg_at_start": os.getloadavg(), "strace": v(["strace", "-V"]), "proot": v(["proot", "--version"]) or v(["proot", "-V"]),
            "hyperfine": v(["hyperfine", "--version"]), "python": sys.version.split()[0],
            "kernel": platform.release(), "cpus": os.cpu_count()}


def inner(args: argparse.Namespace) -> int:
    """Entry used inside the sandbox (and on the host): run the matrix, print JSON."""
    tmp = tempfile.mkdtemp(prefix="k3snb-bench-", dir=args.tmp)
    fake = Path(tmp) / "cap_last_cap"
    fake.write_text("38\n")
    try:
        res = bench(args.runs, tmp, sys.executable, str(fake), args.only)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--gvisor-runs", type=int, default=3)
    ap.add_argument("--builds", default="2022", help="comma list of runsc builds for the gVisor part ('' = skip)")
    ap.add_argument("--only", action="append", help="only these configurations (plus untraced)")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-host", action="store_true")
    args = ap.parse_args()
    if args.only and "untraced" not in args.only:
        args.only.append("untraced")
    if args.inner:
        return inner(args)
    # the environment sets PYTHONDONTWRITEBYTECODE; without .pyc files every tracer start would
    # recompile the kit (~0.1 s), which is not what an installed kit costs
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "k3snb")], check=False,
                   stdout=subprocess.DEVNULL)
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": versions(),
               "workloads": WORKLOADS, "mixed_workloads": list(MIXED), "configs": list(configs("python", "F", "T")),
               "method": "hyperfine -N --warmup 1; all configurations of a workload in one invocation; "
                         "ratio = median / untraced median of that invocation; every command is `sh -c W` "
                         "behind the tool; intercept rules: one exact redirect + statfs 9p->ext4"}
    if not args.no_host:
        print("host:", file=sys.stderr)
        t0 = time.monotonic()
        tmp, fake = tempfile.mkdtemp(prefix="k3snb-bench-"), _host_fake()
        try:
            host = bench(args.runs, tmp, sys.executable, fake, args.only, HOST_WORKLOADS)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(Path(fake).parent, ignore_errors=True)
        doc = {**summary, "workloads": HOST_WORKLOADS, "where": "host", "runs": args.runs, "loadavg_at_end": os.getloadavg(), "results": host, "goals": goals(host, "host"),
               "elapsed_s": round(time.monotonic() - t0)}
        (OUT / "trace-host.json").write_text(json.dumps(doc, indent=1))
        summary["host"] = doc["goals"]
    for build in [b for b in args.builds.split(",") if b]:
        from k3snb.runners.gvisor import GVisor

        print(f"gvisor {build}:", file=sys.stderr)
        t0 = time.monotonic()
        with GVisor(runsc=build, timeout=3600) as g:
            cmd = [g.python, str(Path(__file__).resolve()), "--inner", "--runs", str(args.gvisor_runs),
                   "--tmp", str(g.workdir)]
            for o in args.only or []:
                cmd += ["--only", o]
            r = g.run(cmd, timeout=3000)
            sys.stderr.write(r.stderr)
            if r.returncode != 0:
                print(f"gvisor {build} failed: rc={r.returncode}", file=sys.stderr)
                continue
            res = json.loads(r.stdout.strip().splitlines()[-1])
            info = g.info()
        doc = {**summary, "where": f"gvisor-{build}", "runner": info, "runs": args.gvisor_runs, "results": res,
               "goals": goals(res, "gvisor"), "elapsed_s": round(time.monotonic() - t0)}
        (OUT / f"trace-gvisor-{build}.json").write_text(json.dumps(doc, indent=1, default=str))
        summary[f"gvisor-{build}"] = doc["goals"]
    prev = OUT / "trace-summary.json"
    if prev.exists():  # keep the other environment's goals when only one part was re-run
        old = json.loads(prev.read_text())
        summary = {**{k: v for k, v in old.items() if k == "host" or k.startswith("gvisor")}, **summary}
    prev.write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps({k: v for k, v in summary.items() if k == "host" or k.startswith("gvisor")}, indent=1))
    return 0


def _host_fake() -> str:
    d = Path(tempfile.mkdtemp(prefix="k3snb-bench-fake-"))
    (d / "cap_last_cap").write_text("38\n")
    return str(d / "cap_last_cap")


if __name__ == "__main__":
    sys.exit(main())
