"""What the interception notebooks (04, 06, 09, 24) run, composed from the kit's mechanics (runners, the
cgroup-v1 layout, ``tracing.measurements``, :mod:`.runc`), so the notebooks stay one call per step.

Each returns plain JSON-able data (no Trace objects, no pids, no temp paths) ready for ``k3snb.record``
and for the verdict functions of :mod:`k3snb.studies.interception`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..errors import MissingDependency
from .runc import runc_reach


def sandbox_specs(runner: str, builds: list[str] | tuple[str, ...]) -> list[str]:
    """The runner specs a multi-build notebook runs: ``runner`` itself when it names a runsc build (or
    takes none, like ``host``), else the spec with each of ``builds`` (a platform it names is kept:
    ``gvisor::ptrace`` -> ``gvisor:2022:ptrace``, ...)."""
    from ..runners import expand_spec

    return expand_spec(runner, tuple(builds))


def where(r) -> str:
    """The runner as verdict reasons name it: label, and for gVisor the runsc version and platform."""
    info = r.info()
    extra = ", ".join(str(info[k]) for k in ("runsc_version", "platform") if info.get(k))
    return f"{r.label} ({extra})" if extra else r.label


def _tx():
    from ..tracing import measurements

    return measurements


def _go(r) -> str | None:
    from ..tracing._demo import build_static_go

    try:
        return str(build_static_go(Path(tempfile.mkdtemp(prefix="k3snb-go-", dir=r.workdir))))
    except MissingDependency:
        return None


def procsys_reads(runner: str, keys: list[str]) -> dict[str, Any]:
    """Notebook 04: each key read by five kinds of process (and a static Go reader), plain and intercepted."""
    from ..runners import resolve

    with resolve(runner) as r:
        res = _tx().procsys_reach(r, keys, go_binary=_go(r))
        return {"runner": where(r), "rows": res["rows"], "stats": res["stats"], "features": res["features"]}


def statfs_and_threads(runner: str, paths: list[str]) -> dict[str, Any]:
    """Notebook 06: statfs f_type seen plain and spoofed; a threaded static Go program under the interceptor."""
    from ..runners import resolve

    with resolve(runner) as r:
        views = _tx().statfs_views(r, paths)
        go = _go(r)
        run = _tx().threads_under_interceptor(go, r) if go else None
        if run is not None:
            run.pop("wall_s", None)  # a timing: kept out of stored outputs
            run["several_threads_traced"] = (run.get("tasks_traced") or 0) > 1  # the count varies with Go's scheduler
        return {"runner": where(r), "views": views, "go_threads_run": run}


def _case(res: dict[str, Any], label: str, **extra: Any) -> dict[str, Any]:
    """A runc_reach result without its Trace and machine-specific columns (pids, temp paths)."""
    out = {"runner": label, "plain": res["plain"], "traced": res["traced"], "rootfs_fake": res["rootfs_fake"],
           "redirect": res["redirect"], "runc_version": res["runc_version"],
           "roles": res["roles"].to_dict(orient="records"), **extra}
    res["trace"].close()
    for k in ("plain", "traced"):
        out[k] = {**out[k], "stdout": out[k]["stdout"], "stderr": _untemp(out[k]["stderr"])}
    return out


def _untemp(text: str) -> str:
    import re

    # temp paths and runc's log timestamps are this run's, not the finding
    text = re.sub(r"/[^\s'\"]*/(fake/cap_last_cap)", r"<target>/\1", text)  # wherever the run dir is
    return re.sub(r'time="[^"]*" level=(\w+) msg=', r"\1: ", text)


def preload_and_runc(runner: str, key: str = "/proc/sys/kernel/cap_last_cap") -> dict[str, Any]:
    """Notebook 09: the LD_PRELOAD shim and a static Go reader on ``key`` (plain / LD_PRELOAD / ptrace), then
    ``runc run`` with LD_PRELOAD set for runc, traced, per process role. Debian's runc is dynamically linked,
    so the shim loads into it; whether it reaches runc init's read is what the trace shows. The runner gets
    a full cgroup v1 layout first where it has none (runc needs one to start)."""
    from ..runners import resolve
    from ..runtime.run import ensure_cgroups
    from ..tracing._demo import build_preload

    with resolve(runner) as r:
        table = _tx().preload_vs_ptrace(r, key)
        so = build_preload(Path(tempfile.mkdtemp(prefix="k3snb-shim-", dir=r.workdir)))
        env = {"LD_PRELOAD": str(so), "K3SNB_FROM": str(Path(key).parent), "K3SNB_TO": "{fake_dir}"}
        with ensure_cgroups(r, "auto") as cg:
            res = runc_reach(r, redirect=False, env=env)
        return {"runner": where(r), "reads": table["rows"],
                "runc_preload": _case(res, where(r), controllers=cg["mounted"])}


def runc_reach_cases(runner: str, builds: list[str]) -> dict[str, Any]:
    """Notebook 24: ``runc run`` of a busybox bundle that reads cap_last_cap, traced with a redirect of that
    path, on the host (target also in the rootfs, and only outside it: the seed setup) and in gVisor per
    build with a full cgroup v1 layout (the ``cgroup-v1`` workaround over every controller the build mounts;
    2022 has no devices controller). Returns ``{"cases": label -> case, "gvisor": build label -> plain case}``.
    """
    from ..runners import resolve
    from ..runtime.run import ensure_cgroups

    cases: dict[str, Any] = {}
    gvisor: dict[str, Any] = {}
    with resolve("host") as h:
        cases["host, target also in the rootfs"] = _case(runc_reach(h, rootfs_fake="38"), "host")
        cases["host, target only outside (seed setup)"] = _case(runc_reach(h, rootfs_fake=None), "host")
    for spec in sandbox_specs(runner, builds):
        with resolve(spec) as g, ensure_cgroups(g, "auto") as cg:
            c = _case(runc_reach(g, rootfs_fake=None), where(g), controllers=cg["mounted"])
            cases[f"{g.label}, target only outside (seed setup)"] = c
            gvisor[g.label] = c
    return {"cases": cases, "gvisor": gvisor}


def runsc_build(runner: str, default: str = "2022") -> str:
    """The runsc build a gVisor runner spec names (``gvisor:2024`` -> ``2024``; none named -> ``default``,
    for a notebook about one build, e.g. 91 about 2024)."""
    from ..runners import parse_spec

    return str(parse_spec(runner)[1].get("runsc", default))


def runsc_identity(build: str) -> dict[str, Any]:
    """``runsc --version`` of the build and the Debian package it was extracted from (``package``: the
    package version, e.g. ``0.0~20240729.0-4+b7``; None when unknown)."""
    from ..runners.runsc import find_runsc, runsc_provenance, runsc_version_text

    prov = runsc_provenance(build) if build == "2024" else {}
    return {"build": build, "version_text": runsc_version_text(find_runsc(build)), "package": prov.get("version"),
            "suite": prov.get("suite")}
