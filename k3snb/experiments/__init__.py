"""Experiments: the registry of notebooks, their papermill execution, and ``record``/``verdict``.

``k3snb.list_experiments()`` shows the registry.
"""

from __future__ import annotations

from ._execute import KERNEL_NAME, run_experiments
from ._record import STATUSES, Verdict, record, results, verdict
from ._registry import Experiment, Registry, list_experiments, load_registry

__all__ = [
    "KERNEL_NAME",
    "STATUSES",
    "Experiment",
    "Registry",
    "Verdict",
    "list_experiments",
    "load_registry",
    "record",
    "results",
    "run_experiments",
    "verdict",
]

