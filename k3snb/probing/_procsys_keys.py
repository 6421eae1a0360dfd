"""The list of /proc/sys keys the Kubernetes stack touches (package data ``k3snb/data/procsys.yaml``)."""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib import resources
from typing import Any

USERS = frozenset({"kubelet", "kube-proxy", "runc", "containerd", "k3s", "flannel", "runsc"})
ACCESS = frozenset({"r", "rw"})


@lru_cache(maxsize=1)
def _load() -> tuple[dict[str, Any], ...]:
    import yaml

    text = resources.files("k3snb").joinpath("data/procsys.yaml").read_text()
    doc = yaml.safe_load(text)
    keys = doc["keys"]
    seen: set[str] = set()
    for k in keys:
        # The file is data other modules depend on: fail loudly on a malformed entry.
        name = k.get("key", "")
        if not name or name.startswith("/") or name in seen:
            raise ValueError(f"procsys.yaml: bad or duplicate key {name!r}")
        if not set(k.get("users", [])) <= USERS or k.get("access") not in ACCESS:
            raise ValueError(f"procsys.yaml: bad users/access for {name!r}")
        seen.add(name)
    return tuple(keys)


def procsys_keys() -> list[dict[str, Any]]:
    """Return the /proc/sys keys kubelet, kube-proxy, runc, containerd, k3s and flannel use.

    Each item is a dict with ``key`` (relative to /proc/sys), ``users``, ``access`` ("r"/"rw"),
    ``linux_default`` and, where they exist, ``kubelet_value`` and ``note``. The list is a fresh
    copy; mutating it does not change later calls.
    """
    return copy.deepcopy(list(_load()))
