"""Classifier speed against ``grep -F`` with the signatures' literal needles, side by side in one run.

Generates a 1,000,000-line log (~137 MB: the fixture logs of data/logs plus every signature example,
some wrapped in klog/logrus quoting) in a temp dir, then alternates, ``--rounds`` times:
``grep -F -c -f needles`` (the lower bound: one literal pass, no regexes, no records) and
``k3snb.classify(path)`` in a fresh interpreter (catalogue loaded before the clock starts). Ratios use
the median of each; both wall and CPU seconds are recorded (CPU is steadier on a shared machine).
Then a single 150 MB line holding two signatures: matches found, peak memory growth recorded.

Goal (issue 12): classify reaches >= 30 % of grep -F's lines per second, memory bounded on the big line.
Writes data/benchmarks/classify.json.

Usage: python benchmarks/bench_classify.py [--lines 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from k3snb.signatures import load_catalog

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "benchmarks"
GOAL = 0.30

_CHILD = """
import json, resource, sys, time
import k3snb
from k3snb.signatures import load_catalog
load_catalog(); k3snb.classify("warm up")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
w, c = time.perf_counter(), time.process_time()
r = k3snb.classify(sys.argv[1])
w, c = time.perf_counter() - w, time.process_time() - c
ids = sorted({m["id"] for m in r.matches})
print(json.dumps({"wall": w, "cpu": c, "lines": r.lines, "matches": len(r.matches), "ids": ids,
                  "maxrss_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


def machine() -> dict:
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "grep": subprocess.run(["grep", "--version"], capture_output=True, text=True).stdout.splitlines()[0]}


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def make_log(path: Path, n: int, seed: int = 1) -> int:
    """n lines: the fixture logs cycled, with a signature example (plain, klog- or logrus-quoted) in
    every 50th line. Returns the size in bytes."""
    base = []
    for f in sorted((ROOT / "data" / "logs").glob("*.log")):
        base += f.read_text().splitlines()
    examples = [e for s in load_catalog().signatures for e in s.examples]
    rng = random.Random(seed)
    with open(path, "w") as out:
        for i in range(n):
            if i % 50 == 49:
                e = rng.choice(examples)
                e = rng.choice([e, f'time="2025-11-22T10:33:15Z" level=error msg="{_esc(e)}"',
                                f'E1122 10:33:15.794727   40906 kubelet.go:1703] "Failed" err="{_esc(e)}"'])
            else:
                e = base[i % len(base)]
            out.write(e + "\n")
    return path.stat().st_size


def needles_file(path: Path) -> int:
    ns = sorted({n for s in load_catalog().signatures for n in (s.needles or ())})
    path.write_text("".join(n + "\n" for n in ns))
    return len(ns)


def run_grep(needles: Path, log: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w = time.perf_counter()
    p = subprocess.run(["grep", "-F", "-c", "-f", str(needles), str(log)], capture_output=True, text=True)
    w = time.perf_counter() - w
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": w, "cpu": cpu, "matching_lines": int(p.stdout.strip() or 0)}


def run_classify(log: Path) -> dict:
    p = subprocess.run([sys.executable, "-c", _CHILD, str(log)], capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def huge_line(tmp: Path, mib: int = 150) -> dict:
    cat = load_catalog()
    a, b = cat.get("S39").examples[0], cat.get("S06").examples[0]
    path = tmp / "one-line.log"
    with open(path, "wb") as f:
        f.write(b"first line\n")
        for i in range(mib):
            f.write(b"y" * (1 << 20))
            if i == mib // 2:
                f.write(a.encode())
        f.write(b" " + b.encode() + b"\nlast line\n")
    r = run_classify(path)
    r["size_mib"] = round(path.stat().st_size / 2**20, 1)
    r["found_both"] = {"S39", "S06"} <= set(r["ids"])
    path.unlink()
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="log lines to generate (default 1000000)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating grep/classify rounds (default 3)")
    ap.add_argument("--out", "-o", default=str(DATA / "classify.json"), help="result JSON file")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="k3snb-bench-classify-"))
    try:
        log, needles = tmp / "k3s.log", tmp / "needles.txt"
        size = make_log(log, a.lines)
        n_needles = needles_file(needles)
        grep, cls = [], []
        for _ in range(a.rounds):  # interleaved: both see the same machine load
            grep.append(run_grep(needles, log))
            cls.append(run_classify(log))
        med = {k: {"grep": statistics.median(g[k] for g in grep), "classify": statistics.median(c[k] for c in cls)}
               for k in ("wall", "cpu")}
        ratio = {k: round(v["grep"] / v["classify"], 3) for k, v in med.items()}  # = classify lines/s ÷ grep's
        big = huge_line(tmp)
        result = {
            "date": dt.date.today().isoformat(), "machine": machine(),
            "log": {"lines": a.lines, "mb": round(size / 1e6, 1), "needles": n_needles},
            "rounds": {"grep": grep, "classify": [{k: v for k, v in c.items() if k != "ids"} for c in cls]},
            "median_seconds": med,
            "lines_per_second": {k: {t: round(a.lines / v[t]) for t in v} for k, v in med.items()},
            "ratio_of_grep_lines_per_second": ratio,
            "goal": GOAL, "goal_met": {k: v >= GOAL for k, v in ratio.items()},
            "huge_line": {k: v for k, v in big.items() if k != "ids"},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"ratio": ratio, "median_seconds": med, "huge_line": result["huge_line"]}, indent=1))
    print(f"-> {out}")
    return 0 if all(result["goal_met"].values()) and big["found_both"] else 1


if __name__ == "__main__":
    sys.exit(main())
