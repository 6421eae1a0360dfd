"""What an environment offers k3s (layer 2).

* :func:`probe` runs the collector inside a runner and returns an :class:`EnvProbe`
  (~130 facts: kernel, sandbox kind, root fs, /proc/sys keys, devices, caps, cgroups, mounts …).
* :func:`diff` lines up two or more probes and shows what differs.
* the verdicts on the research's environment claims are ``k3snb.studies.environment``.
* :func:`procsys_keys` is the list of /proc/sys keys the Kubernetes stack touches
  (``k3snb/data/procsys.yaml``).
"""



from ._diff import KEY_FACTS, ProbeDiff, diff, key_facts
from ._facts import Fact
from ._probe import EnvProbe, probe, probe_environments
from ._procsys_keys import procsys_keys

__all__ = [
    "KEY_FACTS",
    "EnvProbe",
    "Fact",
    "ProbeDiff",
    "diff",
    "key_facts",
    "probe",
    "probe_environments",
    "procsys_keys",
]

