"""Sandbox stability trials: fresh gVisor sandboxes per runsc configuration, counting the ones that die.

A *trial* is one fresh :class:`~k3snb.runners.gvisor.GVisor` sandbox created with ``start_retries=0``
(a failed creation is a datum, never retried away) that runs ``rounds`` rounds of a small workload.
The trial is a *death* when a command's :class:`~k3snb.runners.base.RunResult` says ``sandbox_died``;
its ``crash`` text (the sentry panic from ``--panic-log``/``--debug-log``) is kept.
Configurations are interleaved round-robin, so drift in machine load hits all of them alike.

Used by notebook 91-runsc-stability and by ``benchmarks/bench_sandbox.py stability`` (the large
study in data/benchmarks/runsc-2024-stability.json, read back with :func:`load_study`).

The records, statistics and storage live in :mod:`k3snb.runners._stability_data` (re-exported here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._paths import kit_python
from ..errors import InvalidParameter
from ._stability_data import (  # noqa: F401  (re-exported)
    STUDY_FILE,
    StabilityResult,
    Trial,
    combine,
    load_study,
    study_to_dict,
    summarize,
    upper_bound,
)
from .gvisor import GVisor
from .runsc import find_runsc, runsc_version, runsc_version_text

# Named configurations: GVisor keyword arguments. Flags given as text ("--directfs=false") map here.
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "directfs=false": {"runsc_flags": ["--directfs=false"]},
    # runsc 2024 refuses shared file access together with the default rootfs overlay
    # ("overlay flag is incompatible with shared file access for rootfs"), so drop the overlay
    "file-access=shared": {"runsc_flags": ["--file-access=shared", "--overlay2=none"]},
    "overlay2=root:memory": {"runsc_flags": ["--overlay2=root:memory"]},
    "overlay2=none": {"runsc_flags": ["--overlay2=none"]},
    "platform=ptrace": {"platform": "ptrace"},
    "debug": {"debug": True},
    "file-access=shared+directfs=false": {"runsc_flags": ["--file-access=shared", "--overlay2=none",
                                                         "--directfs=false"]},
}

# The research notes' execs (gvisor-matrix addendum): python3, ls /proc/sys/vm, cat /proc/mounts.
LIGHT = [["python3", "-c", "import os; print(os.getpid())"], ["ls", "/proc/sys/vm"], ["cat", "/proc/mounts"]]


def workload_argv(workload: str | Sequence[Sequence[str]]) -> list[list[str]]:
    """``"light"`` (the notes' execs), ``"heavy"`` (the kit's venv python importing pandas, psutil and
    kubernetes: hundreds of mmapped files read through the gofer root) or a list of argv lists."""
    if workload == "light":
        return [list(a) for a in LIGHT]
    if workload == "heavy":
        return [[kit_python(), "-c", "import pandas, psutil, kubernetes; print(len(psutil.pids()))"],
                *[list(a) for a in LIGHT[1:]]]
    if isinstance(workload, str) or not workload or not all(
            not isinstance(a, str) and a and all(isinstance(x, str) for x in a) for a in workload):
        raise InvalidParameter(f"workload must be 'light', 'heavy' or a list of argv lists, got {workload!r}",
                               hint="pass workload='light' or e.g. workload=[['ls', '/']]")
    return [list(a) for a in workload]


# A trial function: (build, workload argv lists, rounds) -> Trial. Lets the benchmark time other recipes
# (raw `runsc run --detach`) with the same loop, counting and summary.
TrialFn = Callable[[str, list[list[str]], int], "Trial"]


def resolve_config(config: str | tuple[str, Mapping[str, Any] | TrialFn]) -> tuple[str, dict[str, Any] | TrialFn]:
    """``(label, GVisor kwargs or trial function)`` of a configuration.

    Accepts a name of :data:`CONFIGS` (``"default"``, ``"directfs=false"``, …), the same as flag text
    (``"--directfs=false"``, ``"--platform=ptrace"``, ``"--file-access=shared"``), other runsc flags as
    text (``"--overlay2=none --debug"``), or an explicit ``(label, kwargs | trial function)`` pair.
    """
    if isinstance(config, tuple):
        label, spec = config
        return str(label), (spec if callable(spec) else dict(spec))
    if not isinstance(config, str) or not config.strip():
        raise InvalidParameter(f"a configuration must be a name or runsc flags, got {config!r}",
                               hint=f"pass one of {', '.join(CONFIGS)} or flags such as '--directfs=false'")
    text = config.strip()
    name = " ".join(f.removeprefix("--") for f in text.split())
    if name in CONFIGS:
        return name, dict(CONFIGS[name])
    flags = text.split()
    if not all(f.startswith("-") for f in flags):
        raise InvalidParameter(f"unknown configuration {config!r}",
                               hint=f"pass one of {', '.join(CONFIGS)} or runsc flags such as '--directfs=false'")
    kw: dict[str, Any] = {"runsc_flags": []}
    for f in flags:
        if f.startswith("--platform="):
            kw["platform"] = f.split("=", 1)[1]
        elif f == "--debug":
            kw["debug"] = True
        else:
            kw["runsc_flags"].append(f)
    return name, kw


def kit_trial(build: str, opts: Mapping[str, Any], argvs: list[list[str]], rounds: int, config: str = "") -> Trial:
    """One fresh kit sandbox (``GVisor(build, start_retries=0, **opts)``) running ``rounds`` × ``argvs``."""
    t0 = time.perf_counter()
    opts = dict(opts)
    build = str(opts.pop("runsc", build))
    rec = Trial(config=config)
    g = GVisor(build, start_retries=0, start_timeout=opts.pop("start_timeout", 30), timeout=opts.pop("timeout", 60),
               **opts)
    try:
        try:
            g.start()
            rec.created = True
        except Exception as e:  # a failed creation is a datum, not a crash of the study
            rec.create_error = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            return rec
        for _ in range(rounds):
            for argv in argvs:
                r = g.run(argv)
                rec.last = r
                if r.sandbox_died:
                    rec.died = True
                    rec.died_at_exec = rec.execs_ok + rec.failed_execs + 1
                    rec.crash_head = "\n".join((r.crash or "").splitlines()[:8])[:800]
                    rec.crash = (r.crash or "")[:6000]
                    rec.exec_stderr = r.stderr.strip()[-300:]
                    return rec
                if r.ok:
                    rec.execs_ok += 1
                else:
                    rec.failed_execs += 1
                    if rec.fail_example is None:
                        rec.fail_example = f"{argv[0]} rc={r.returncode} {r.stderr.strip()[-200:]}"
        return rec
    finally:
        g.close()
        rec.seconds = round(time.perf_counter() - t0, 3)


def stability_trial(
    configs: Sequence[str | tuple[str, Any]] = ("default",),
    n: int = 4,
    workload: str | Sequence[Sequence[str]] = "light",
    runsc: str = "2024",
    *,
    rounds: int = 3,
    parallel: int = 1,
    budget_s: float | None = None,
    progress: Callable[[int, StabilityResult], None] | None = None,
) -> StabilityResult:
    """Run ``n`` fresh sandboxes per configuration, interleaved round-robin, and count deaths.

    Args:
        configs: names of :data:`CONFIGS`, runsc flags as text, or ``(label, kwargs | trial function)``.
        n: trials (fresh sandboxes) per configuration; with ``parallel`` > 1, rounds of ``parallel`` each.
        workload: ``"light"``, ``"heavy"`` or a list of argv lists (see :func:`workload_argv`).
        runsc: build name or path (a configuration's ``runsc`` key overrides it).
        rounds: how many times each sandbox runs the workload.
        parallel: sandboxes of one configuration at once (contention as a stressor).
        budget_s: stop starting new rounds after this many seconds.
        progress: called after each round with (rounds done, the result so far).
    """
    if n < 1 or rounds < 1 or parallel < 1:
        raise InvalidParameter(f"n, rounds and parallel must be >= 1 (got n={n}, rounds={rounds}, "
                               f"parallel={parallel})")
    path = find_runsc(runsc)  # RunscMissing before anything starts
    argvs = workload_argv(workload)
    resolved = [resolve_config(c) for c in configs]
    labels = [label for label, _ in resolved]
    if len(set(labels)) != len(labels):
        raise InvalidParameter(f"duplicate configurations {labels}", hint="give each configuration once")
    res = StabilityResult({label: [] for label in labels}, runsc=str(path), runsc_version=runsc_version(path),
                          runsc_version_text=runsc_version_text(path),
                          workload=[" ".join(a) for a in argvs], rounds=rounds, parallel=parallel)

    def one(label: str, spec: Any) -> Trial:
        if callable(spec):
            t = spec(str(runsc), argvs, rounds)
            t.config = label
            return t
        return kit_trial(str(runsc), spec, argvs, rounds, config=label)

    t_start = time.monotonic()
    pool = ThreadPoolExecutor(parallel) if parallel > 1 else None
    try:
        for i in range(n):
            for label, spec in resolved:
                if pool:
                    res.trials[label] += list(pool.map(lambda _, s=spec, lb=label: one(lb, s), range(parallel)))
                else:
                    res.trials[label].append(one(label, spec))
            res.wall_s = round(time.monotonic() - t_start, 1)
            if progress:
                progress(i + 1, res)
            if budget_s is not None and time.monotonic() - t_start > budget_s:
                break
    finally:
        if pool:
            pool.shutdown(wait=True)
    res.wall_s = round(time.monotonic() - t_start, 1)
    return res
