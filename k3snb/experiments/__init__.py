"""Experiments: the registry of notebooks, their papermill execution, and ``record``/``verdict``.

``k3snb.list_experiments()`` shows the registry.
"""

from __future__ import annotations

from ._execute import run_experiments
from ._kernel import KERNEL_NAME, ensure_kernel
from ._params import Parameter, notebook_parameters
from ._record import STATUSES, Verdict, record, results, verdict
from ._registry import Experiment, Registry, list_experiments, load_registry

__all__ = [
    "KERNEL_NAME",
    "STATUSES",
    "Experiment",
    "Parameter",
    "Registry",
    "Verdict",
    "ensure_kernel",
    "list_experiments",
    "notebook_parameters",
    "load_registry",
    "record",
    "results",
    "run_experiments",
    "verdict",
]

