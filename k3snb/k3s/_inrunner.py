"""Functions the launcher runs *inside* the runner (``Runner.run_python``): scratch mounts for the
paths k3s writes outside its data dir, and API probes through the official ``kubernetes`` client
(the API server listens inside the runner's network namespace).
"""

from __future__ import annotations

import errno
import os
from typing import Any

from ..workarounds import _ops

# Paths k3s (server/agent, kubelet, containerd, CNI) writes besides --data-dir; each gets a tmpfs
# inside the runner so nothing lands on the host and a read-only 9p root still works.
SERVER_SCRATCH = ("/run/k3s", "/etc/rancher", "/var/lib/rancher")
AGENT_SCRATCH = SERVER_SCRATCH + ("/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/run/flannel",
                                  "/var/lib/cni", "/run/netns")


def scratch_apply(paths: list[str], stage: str) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    stage_mounted = False
    errors: list[str] = []
    for n, p in enumerate(paths):
        e: dict[str, Any] = {"path": p, "mounts": [], "created": None}
        try:
            if not os.path.isdir(p):
                anc = p
                while not os.path.exists(anc):
                    anc = os.path.dirname(anc)
                top = p
                while os.path.dirname(top) != anc:
                    top = os.path.dirname(top)
                try:
                    os.makedirs(p)
                    e["created"] = top
                except OSError as ex:
                    if ex.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                        raise
                    # read-only parent (gVisor's 9p root): writable overlay with a tmpfs upper
                    if not stage_mounted:
                        os.makedirs(stage, exist_ok=True)
                        _ops.mount("tmpfs", stage, "tmpfs", 0, "mode=0755")
                        stage_mounted = True
                    up, wk = f"{stage}/{n}/upper", f"{stage}/{n}/work"
                    os.makedirs(up)
                    os.makedirs(wk)
                    _ops.mount("overlay", anc, "overlay", 0, f"lowerdir={anc},upperdir={up},workdir={wk}")
                    e["mounts"].append(anc)
                    e["overlay"] = anc
                    os.makedirs(p, exist_ok=True)
            _ops.mount("tmpfs", p, "tmpfs", 0, "mode=0755")
            e["mounts"].append(p)
        except OSError as ex:
            errors.append(f"{p}: {ex}")
        entries.append(e)
    return {"ok": not errors, "entries": entries, "stage": stage if stage_mounted else None, "errors": errors}


def scratch_revert(state: dict[str, Any]) -> dict[str, Any]:
    errors = []
    for e in reversed(state.get("entries", [])):
        for m in reversed(e["mounts"]):
            try:
                _ops.umount(m)
            except OSError as ex:
                errors.append(str(ex))
        top = e.get("created")
        if top:  # remove only the directories we created, and only when empty
            p = e["path"]
            while True:
                try:
                    os.rmdir(p)
                except OSError:
                    break
                if p == top:
                    break
                p = os.path.dirname(p)
    if state.get("stage"):
        try:
            _ops.umount(state["stage"])
            os.rmdir(state["stage"])
        except OSError as ex:
            errors.append(str(ex))
    return {"ok": not errors, "errors": errors}


def api_probe(kubeconfig: str, nodes: bool, timeout: float = 5.0) -> dict[str, Any]:
    """GET /readyz (and list nodes) with the kubeconfig k3s wrote, via the official client."""
    from kubernetes import client, config

    out: dict[str, Any] = {"readyz": False, "nodes": None, "error": None}
    try:
        api = config.new_client_from_config(config_file=kubeconfig)
    except Exception as e:  # noqa: BLE001 - report any kubeconfig problem as data
        out["error"] = f"kubeconfig: {e}"
        return out
    try:
        resp = api.call_api("/readyz", "GET", auth_settings=["BearerToken"], response_type="str",
                            _preload_content=False, _request_timeout=timeout)
        r = resp[0] if isinstance(resp, tuple) else resp
        body = r.data.decode(errors="replace") if hasattr(r, "data") else str(r)
        out["readyz"] = getattr(r, "status", 200) == 200 and body.strip() == "ok"
        out["readyz_body"] = body[:200]
        if nodes:
            items = client.CoreV1Api(api).list_node(_request_timeout=timeout).items
            out["nodes"] = [
                {"name": n.metadata.name,
                 "ready": any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or [])),
                 "reason": next((c.reason for c in (n.status.conditions or []) if c.type == "Ready"), None),
                 "kubelet": n.status.node_info.kubelet_version if n.status.node_info else None}
                for n in items
            ]
    except Exception as e:  # noqa: BLE001
        out["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        api.close()
    return out


def apply_manifests(kubeconfig: str, docs: list[dict], namespace: str = "default") -> list[dict[str, Any]]:
    """Create objects from manifest dicts with ``kubernetes.utils.create_from_dict``."""
    from kubernetes import config, utils
    from kubernetes.utils import FailToCreateError

    api = config.new_client_from_config(config_file=kubeconfig)
    rows = []
    try:
        for d in docs:
            row = {"kind": d.get("kind"), "name": d.get("metadata", {}).get("name"), "created": False, "error": None}
            try:
                utils.create_from_dict(api, d, namespace=d.get("metadata", {}).get("namespace", namespace))
                row["created"] = True
            except FailToCreateError as e:
                row["error"] = "; ".join(f"{x.status} {x.reason}" for x in e.api_exceptions)[:300]
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            rows.append(row)
    finally:
        api.close()
    return rows


def list_objects(kubeconfig: str, namespace: str = "default") -> dict[str, Any]:
    """Namespaces, deployments, services and pods (name + phase) as seen through the API."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        return {
            "namespaces": [n.metadata.name for n in core.list_namespace().items],
            "deployments": [d.metadata.name for d in apps.list_namespaced_deployment(namespace).items],
            "services": [(s.metadata.name, s.spec.cluster_ip) for s in core.list_namespaced_service(namespace).items],
            "pods": [(p.metadata.name, p.status.phase) for p in core.list_namespaced_pod(namespace).items],
        }
    finally:
        api.close()
