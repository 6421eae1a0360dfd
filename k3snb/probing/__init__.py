"""What an environment offers k3s (layer 2).

* :func:`probe` runs the collector inside a runner and returns an :class:`EnvProbe`
  (~130 facts: kernel, sandbox kind, root fs, /proc/sys keys, devices, caps, cgroups, mounts …).
* :func:`diff` lines up two or more probes and shows what differs.
* :func:`check_claims` judges the seed research's environment claims from probes.
* :func:`procsys_keys` is the list of /proc/sys keys the Kubernetes stack touches
  (``k3snb/data/procsys.yaml``).
"""



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

