"""Experiments: the registry of notebooks, their papermill execution, and ``record``/``verdict``.

``k3snb.experiments`` is both this package and the function listing the registry: the package is
made callable, so ``k3snb.experiments()`` works whichever of the two an import left on ``k3snb``.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ._execute import KERNEL_NAME, run_experiments
from ._record import STATUSES, Verdict, record, results, verdict
from ._registry import Experiment, Registry, experiments, load_registry

__all__ = [
    "KERNEL_NAME",
    "STATUSES",
    "Experiment",
    "Registry",
    "Verdict",
    "experiments",
    "load_registry",
    "record",
    "results",
    "run_experiments",
    "verdict",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Registry:
        return experiments(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
