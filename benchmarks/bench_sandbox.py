"""Sandbox benchmarks for the GVisor runner.

``lifecycle`` (default): create, first exec, exec, close through the kit versus raw runsc commands on
the same bundle shape, interleaved in one run; writes data/benchmarks/sandbox-lifecycle.json.
Two raw baselines: ``raw-detach`` (the usual ``run --detach`` … ``exec`` … ``delete --force``) and
``raw-foreground`` (``runsc run`` kept as a child … ``exec`` … ``kill``, the mechanism the kit uses),
so the ratio kit/raw-foreground is the kit's own overhead.

``stability``: fresh sandboxes per runsc configuration doing a few execs each, counting deaths
(``k3snb.runners.stability.stability_trial``, plus the notes' raw ``run --detach`` recipe as a
configuration); writes data/benchmarks/runsc-2024-stability.json.

Usage: python benchmarks/bench_sandbox.py lifecycle [-n N] [--runsc 2022,2024]
       python benchmarks/bench_sandbox.py stability [-n N] [--configs a,b] [--workload light|heavy]
                                        [--parallel K] [--append]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from k3snb.runners import _oci
from k3snb.runners.gvisor import INIT_SCRIPT, READY, GVisor, extract_panic
from k3snb.runners.runsc import find_runsc, runsc_version
from k3snb.runners.stability import CONFIGS, StabilityResult, Trial, stability_trial, study_to_dict, summarize

DATA = Path(__file__).resolve().parent.parent / "data" / "benchmarks"


def machine() -> dict:
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def _bundle(base: Path) -> Path:
    work = base / "work"
    (work / ".home").mkdir(parents=True)
    cfg = _oci.spec(str(work), env={"HOME": str(work / ".home")})
    cfg["process"]["args"] = ["/bin/sh", "-c", INIT_SCRIPT]
    return _oci.write_bundle(base / "bundle", cfg)


def raw_detach(runsc: str) -> dict:
    base = Path(tempfile.mkdtemp(prefix="k3snb-bench-"))
    try:
        b = _bundle(base)
        r = [runsc, f"--root={base / 'state'}"]
        t0 = time.perf_counter()
        # same init as the kit; --detach returns once the container runs, so no readiness wait
        # the detached sandbox inherits stdio: never hand it a pipe we would wait on
        subprocess.run([*r, "--network=none", "run", "--detach", "--bundle", str(b), "c"], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        t1 = time.perf_counter()
        subprocess.run([*r, "exec", "c", "/bin/true"], check=True, capture_output=True, timeout=60)
        t2 = time.perf_counter()
        subprocess.run([*r, "exec", "c", "/bin/true"], check=True, capture_output=True, timeout=60)
        t3 = time.perf_counter()
        subprocess.run([*r, "delete", "--force", "c"], check=True, capture_output=True, timeout=60)
        t4 = time.perf_counter()
        return {"create": t1 - t0, "first_exec": t2 - t1, "exec": t3 - t2, "close": t4 - t3}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def raw_foreground(runsc: str) -> dict:
    base = Path(tempfile.mkdtemp(prefix="k3snb-bench-"))
    try:
        b = _bundle(base)
        r = [runsc, f"--root={base / 'state'}"]
        t0 = time.perf_counter()
        p = subprocess.Popen([*r, "--network=none", "run", "--bundle", str(b), "c"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
        assert READY in p.stdout.readline().decode()
        t1 = time.perf_counter()
        subprocess.run([*r, "exec", "c", "/bin/true"], check=True, capture_output=True, timeout=60)
        t2 = time.perf_counter()
        subprocess.run([*r, "exec", "c", "/bin/true"], check=True, capture_output=True, timeout=60)
        t3 = time.perf_counter()
        subprocess.run([*r, "kill", "c", "KILL"], check=True, capture_output=True, timeout=60)
        p.wait(30)
        p.stdout.close()
        t4 = time.perf_counter()
        return {"create": t1 - t0, "first_exec": t2 - t1, "exec": t3 - t2, "close": t4 - t3}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def kit(runsc: str) -> dict:
    t0 = time.perf_counter()
    g = GVisor(runsc).start()
    try:
        t1 = time.perf_counter()
        g.run(["/bin/true"], check=True)
        t2 = time.perf_counter()
        g.run(["/bin/true"], check=True)
        t3 = time.perf_counter()
    finally:
        g.close()
    t4 = time.perf_counter()
    return {"create": t1 - t0, "first_exec": t2 - t1, "exec": t3 - t2, "close": t4 - t3}


def lifecycle(n: int, build: str) -> dict:
    runsc = str(find_runsc(build))
    modes = {"kit": kit, "raw-foreground": raw_foreground, "raw-detach": raw_detach}
    samples: dict[str, list[dict]] = {m: [] for m in modes}
    for f in modes.values():  # warm-up (page cache, python imports), not recorded
        f(runsc)
    for i in range(n):
        order = list(modes) if i % 2 == 0 else list(reversed(modes))  # interleave, alternate order
        for m in order:
            samples[m].append(modes[m](runsc))
    phases = ["create", "first_exec", "exec", "close"]
    med = {m: {ph: statistics.median(s[ph] for s in samples[m]) * 1000 for ph in phases} for m in modes}
    for m in modes:
        med[m]["total"] = sum(med[m][ph] for ph in phases)
    ratios = {base: {ph: round(med["kit"][ph] / med[base][ph], 3) for ph in [*phases, "total"]}
              for base in ("raw-foreground", "raw-detach")}
    return {
        "benchmark": "sandbox-lifecycle",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "runsc": runsc, "runsc_version": runsc_version(runsc), "n": n,
        "medians_ms": {m: {k: round(v, 2) for k, v in d.items()} for m, d in med.items()},
        "ratio_kit_over": ratios,
        "samples_ms": {m: [{k: round(v * 1000, 2) for k, v in s.items()} for s in samples[m]] for m in modes},
        "notes": "interleaved, alternating order, 1 warm-up each; exec = /bin/true; "
                 "raw-detach close = `runsc delete --force` (waits for PID 1 to reap the orphaned sandbox)",
    }


# -- stability ----------------------------------------------------------------------------------
# The trial loop, counting and summary live in k3snb.runners.stability (also used by notebook 91);
# this file adds only the raw-detach recipe (not the kit) and writes the study file.


def raw_detach_trial(build: str, argvs: list[list[str]], rounds: int, flags: tuple[str, ...] = ()) -> Trial:
    """The research notes' recipe verbatim: ``runsc run --detach`` + ``runsc exec``, init ``sleep``.

    Kept next to the kit's trials to tell apart "the 2024 build dies" from "the detach recipe dies".
    """
    runsc = str(find_runsc(build))
    base = Path(tempfile.mkdtemp(prefix="k3snb-bench-"))
    t0 = time.perf_counter()
    rec = Trial(config="raw-detach")
    try:
        work = base / "work"
        work.mkdir()
        b = _oci.write_bundle(base / "bundle", _oci.spec(str(work), env={"HOME": "/tmp"}))
        r = [runsc, f"--root={base / 'state'}"]
        logs = [f"--debug-log={base}/logs/", f"--panic-log={base}/logs/panic.log"]
        (base / "logs").mkdir()
        with open(base / "logs" / "run.stderr", "w") as err:  # a pipe would be inherited by the sandbox
            c = subprocess.run([*r, *logs, "--network=none", *flags, "run", "--detach", "--bundle", str(b), "c"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=60)
        if c.returncode != 0:
            rec.create_error = (base / "logs" / "run.stderr").read_text()[-300:]
            return rec
        rec.created = True
        for _ in range(rounds):
            for argv in argvs:
                try:
                    e = subprocess.run([*r, "exec", "c", *argv], capture_output=True, text=True, timeout=60)
                    rc, err = e.returncode, e.stderr
                except subprocess.TimeoutExpired:
                    rc, err = None, "timeout"
                st = subprocess.run([*r, "state", "c"], capture_output=True, text=True, timeout=30)
                if '"running"' not in st.stdout or "urpc" in err or "control server" in err:
                    texts = [p.read_text(errors="replace") for p in sorted((base / "logs").glob("*"))]
                    rec.died, rec.died_at_exec = True, rec.execs_ok + rec.failed_execs + 1
                    rec.crash = (extract_panic(texts) or "")[:6000]
                    rec.crash_head = "\n".join(rec.crash.splitlines()[:8])[:800]
                    rec.exec_stderr = err.strip()[-300:]
                    return rec
                if rc == 0:
                    rec.execs_ok += 1
                else:
                    rec.failed_execs += 1
        return rec
    finally:
        subprocess.run([runsc, f"--root={base / 'state'}", "delete", "--force", "c"], capture_output=True,
                       timeout=60)
        shutil.rmtree(base, ignore_errors=True)
        rec.seconds = round(time.perf_counter() - t0, 3)


def stability(n: int, rounds: int, configs: list[str], budget_s: float, control_n: int,
              parallel: int = 1, workload: str = "light") -> dict:
    specs = [("raw-detach", raw_detach_trial) if c == "raw-detach" else c for c in configs]

    def progress(done: int, res: StabilityResult) -> None:
        print(f"trial {done}/{n}: " + ", ".join(f"{c}={sum(t.died for t in ts)}" for c, ts in res.trials.items()),
              file=sys.stderr, flush=True)

    res = stability_trial(specs, n, workload, "2024", rounds=rounds, parallel=parallel, budget_s=budget_s,
                          progress=progress)
    # the 2022 build as a control, after the study (same workload, kit default)
    control = stability_trial(["default"], control_n, workload, "2022", rounds=rounds) if control_n else None
    out = {"study": "runsc-2024-stability", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "machine": machine(), **study_to_dict(res)}
    out["method"] = (f"fresh sandbox per trial (kit: GVisor, start_retries=0; raw-detach: run --detach + exec), "
                     f"{parallel} at a time, {rounds} rounds of {res.workload}; configurations interleaved "
                     f"round-robin")
    out["control_2022"] = summarize(control.trials["default"]) if control else None
    out["control_2022_trials"] = [t.to_dict() for t in control.trials["default"]] if control else []
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", default="lifecycle", choices=["lifecycle", "stability"])
    ap.add_argument("-n", type=int, default=None)
    ap.add_argument("--runsc", default="2022")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--configs", default=",".join([*CONFIGS, "raw-detach"]))
    ap.add_argument("--budget", type=float, default=900.0, help="stop adding trials after this many seconds")
    ap.add_argument("--control", type=int, default=10, help="2022 control trials")
    ap.add_argument("--workload", choices=["light", "heavy"], default="light",
                    help="stability: light = python3/ls/cat (the notes' execs); heavy = import pandas etc.")
    ap.add_argument("--parallel", type=int, default=1, help="stability: sandboxes at once per configuration")
    ap.add_argument("--append", action="store_true", help="stability: add this run to the file's list of runs")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    DATA.mkdir(parents=True, exist_ok=True)
    if a.mode == "lifecycle":
        runs = [lifecycle(a.n or 15, b) for b in a.runsc.split(",")]
        out = Path(a.out or DATA / "sandbox-lifecycle.json")
        for r in runs:
            print(r["runsc_version"], json.dumps({"medians_ms": r["medians_ms"],
                                                  "ratio_kit_over": r["ratio_kit_over"]}, indent=1))
        res = {"benchmark": "sandbox-lifecycle", "runs": runs}
    else:
        res = stability(a.n or 30, a.rounds, a.configs.split(","), a.budget, a.control, a.parallel, a.workload)
        out = Path(a.out or DATA / "runsc-2024-stability.json")
        print(json.dumps({"summary": res["summary"], "control_2022": res["control_2022"]}, indent=1))
        runs = []
        if a.append and out.exists():
            old = json.loads(out.read_text())
            runs = old.get("runs", [old])
        res = {"study": "runsc-2024-stability", "runs": [*runs, res]}
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
