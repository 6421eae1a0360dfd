"""What an environment offers k3s (layer 2).

* :func:`probe` runs the collector inside a runner and returns an :class:`EnvProbe`
  (~130 facts: kernel, sandbox kind, root fs, /proc/sys keys, devices, caps, cgroups, mounts …).
* :func:`diff` lines up two or more probes and shows what differs.
* :func:`check_claims` judges the seed research's environment claims from probes.
* :func:`procsys_keys` is the list of /proc/sys keys the Kubernetes stack touches
  (``k3snb/data/procsys.yaml``).
"""

import sys
import types
from typing import Any

from ._claims import Claim, check_claims
from ._diff import KEY_FACTS, ProbeDiff, diff, key_facts
from ._facts import Fact
from ._procsys import procsys_keys
from ._record import EnvProbe, probe, probe_environments

__all__ = [
    "KEY_FACTS",
    "Claim",
    "EnvProbe",
    "Fact",
    "ProbeDiff",
    "check_claims",
    "diff",
    "key_facts",
    "probe",
    "probe_environments",
    "procsys_keys",
]


class _CallableModule(types.ModuleType):
    # Importing this sub-package rebinds ``k3snb.probe`` from the function to the module, so the
    # module itself must be callable for ``k3snb.probe(runner)`` to keep working in cells.
    def __call__(self, *args: Any, **kwargs: Any) -> EnvProbe:
        return probe(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
