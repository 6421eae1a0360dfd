"""Flag-only workarounds: they contribute k3s/kubelet flags, spelled exactly as in the research
(seed-catalog §2/§3, anchors A.3). The flags live in ``k3snb/data/workarounds.yaml``; one generic
class serves them all (``_base._load_all`` creates a subclass per YAML entry of kind ``flag``).
"""

from __future__ import annotations

from ._base import Workaround


class FlagWorkaround(Workaround):
    """A workaround that only adds k3s flags; apply() edits the launch plan, check() verifies it."""

    params = {}
