"""k3snb — a notebook research kit for running k3s inside restricted sandboxes.

The flat cell API (one call per idea). Layers, bottom-up (imports go only downward; see
docs/DEVELOPING.md):

* foundation — errors, state records, ``_system`` (syscalls), the HTML repr base.
* ``runners``    — where things run: runner specs (``get_runner("gvisor:2024")``), ``Host``, ``GVisor``.
* ``probing``/``tracing``/``workarounds``/``cni``/``signatures`` — probe, trace, fixes, CNI, classify.
* ``k3s``/``runtime``/``images``/``pods`` — launching k3s with a profile; runc/containerd; pods over CRI.
* ``experiments``/``studies`` — papermill notebooks, verdicts; on top ``report``, the CLI and ``doctor``.

Heavy imports (pandas, kubernetes, papermill) wait until first use, so ``import k3snb`` is fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    # runners
    "get_runner": "k3snb.runners",
    "Runner": "k3snb.runners",
    "RunResult": "k3snb.runners",
    "Capabilities": "k3snb.runners",
    "Host": "k3snb.runners.host",
    "GVisor": "k3snb.runners.gvisor",
    "list_runsc_builds": "k3snb.runners.runsc",
    "doctor": "k3snb._doctor",
    "Doctor": "k3snb._doctor",
    "StabilityResult": "k3snb.runners.stability",
    # probe
    "probe": "k3snb.probing",
    "diff": "k3snb.probing",
    "EnvProbe": "k3snb.probing",
    "ProbeDiff": "k3snb.probing",
    # tracing / interception
    "trace": "k3snb.tracing",
    "intercept": "k3snb.tracing",
    "Trace": "k3snb.tracing",
    "Rule": "k3snb.tracing",
    "fake_procsys": "k3snb.tracing",
    "diff_traces": "k3snb.tracing",
    "InterceptResult": "k3snb.tracing",
    # fixes and diagnosis
    "list_workarounds": "k3snb.workarounds",
    "get_workaround": "k3snb.workarounds",
    "WorkaroundResult": "k3snb.workarounds",
    "classify": "k3snb.signatures",
    "list_signatures": "k3snb.signatures",
    "install_cni": "k3snb.cni",
    # k3s
    "find_k3s": "k3snb.k3s",
    "install_k3s": "k3snb.k3s",
    "launch_k3s": "k3snb.k3s",
    "list_profiles": "k3snb.k3s",
    "K3sCluster": "k3snb.k3s",
    # pods over CRI
    "Pod": "k3snb.pods",
    "PodRuntime": "k3snb.pods",
    # experiments / monitoring / display
    "list_experiments": "k3snb.experiments",
    "run_experiments": "k3snb.experiments",
    "record": "k3snb.experiments",
    "verdict": "k3snb.experiments",
    "Verdict": "k3snb.experiments",
    "conclude": "k3snb.studies",  # a notebook's last call: its verdicts, checked against the registry, one table
    "get_claim": "k3snb.studies",
    "RunSummary": "k3snb.report",
    "monitor": "k3snb.monitoring",
    "watch": "k3snb.monitoring",
    "set_options": "k3snb.report",
    "make_report": "k3snb.report",
    "list_runs": "k3snb.report",
    "plot_death_rates": "k3snb.report.plots",
    "plot_overhead": "k3snb.report.plots",
    "plot_stages": "k3snb.report.plots",
    "plot_resources": "k3snb.report.plots",
    "plot_env_diff": "k3snb.report.plots",
}
# errors: every class a caller may catch, flat (``except k3snb.SandboxDied``)
_API.update(dict.fromkeys((
    "K3snbError", "UsageError", "InvalidParameter", "NotRoot", "MissingDependency", "RunscMissing",
    "K3sBinaryMissing", "SandboxError", "SandboxDied", "CommandFailed", "RemoteError", "WorkaroundFailed",
    "BlockerDetected", "ExperimentFailed", "K3sError", "TraceError", "UnsafeStateDir"), "k3snb.errors"))

__all__ = sorted(_API) + ["__version__", "errors"]


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("k3snb.errors")
    mod = _API.get(name)
    if mod is None:
        raise AttributeError(f"module 'k3snb' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
