"""Pods the way kubelet makes them: a CRI client over the kit's containerd, Kubernetes Pod manifests,
real CNI networking, logs and exec — in the Host runner and in gVisor.

``k3snb.Pod(manifest, runner="gvisor", runsc="2024")`` runs one pod; ``k3snb.PodRuntime`` shares
one containerd (and pod network) between pods. CLI: ``k3snb pod run POD.yaml``.
"""

from __future__ import annotations

from ..runtime.containerd import RUNTIMES
from ._manifest import ContainerSpec, PodSpec, parse_manifest, resolve_image
from ._pod import Pod
from ._runtime import CNI_MODES, PodError, PodRuntime

__all__ = ["Pod", "PodRuntime", "PodError", "PodSpec", "ContainerSpec", "parse_manifest", "resolve_image",
           "CNI_MODES", "RUNTIMES"]
