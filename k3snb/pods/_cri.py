"""CRI v1 calls, run *inside* the runner (``Runner.run_python``) next to containerd's socket.

The socket lives in the runner (inside gVisor a unix socket is not reachable from the host), so each
function here is one batch of gRPC calls made where containerd runs. Configs travel as plain dicts
in CRI's proto field names and are parsed with ``json_format.ParseDict``; every call is logged as an
event ``{"t", "kind": "cri", "call", "ok", "duration_s", "detail"|"error"}`` for the pod's timeline.
Only the kit and the CRI stubs (grpcio + protobuf) are imported: this runs in a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

STATE_NAMES = {0: "CONTAINER_CREATED", 1: "CONTAINER_RUNNING", 2: "CONTAINER_EXITED", 3: "CONTAINER_UNKNOWN"}
SANDBOX_STATES = {0: "SANDBOX_READY", 1: "SANDBOX_NOTREADY"}


class _Session:
    def __init__(self, sock: str) -> None:
        import grpc
        from cri_api.v1 import api_pb2, api_pb2_grpc

        self.grpc, self.api = grpc, api_pb2
        self.channel = grpc.insecure_channel(f"unix://{sock}")
        self.rt = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.events: list[dict[str, Any]] = []

    def call(self, name: str, request: Any, timeout: float, **detail: Any) -> Any:
        t0 = time.time()
        try:
            reply = getattr(self.rt, name)(request, timeout=timeout)
        except self.grpc.RpcError as e:
            msg = e.details() if hasattr(e, "details") else str(e)
            code = e.code().name if hasattr(e, "code") and e.code() else ""
            self.events.append({"t": t0, "kind": "cri", "call": name, "ok": False,
                                "duration_s": round(time.time() - t0, 4), "error": f"{code}: {msg}", **detail})
            raise _CallFailed(name, msg) from None
        self.events.append({"t": t0, "kind": "cri", "call": name, "ok": True,
                            "duration_s": round(time.time() - t0, 4), **detail})
        return reply

    def parse(self, d: dict, cls: str) -> Any:
        from google.protobuf import json_format

        return json_format.ParseDict(d, getattr(self.api, cls)())

    def close(self) -> None:
        self.channel.close()


class _CallFailed(Exception):
    def __init__(self, call: str, msg: str) -> None:
        super().__init__(msg)
        self.call, self.msg = call, msg


def _container_status(s: _Session, cid: str) -> dict[str, Any]:
    st = s.call("ContainerStatus", s.api.ContainerStatusRequest(container_id=cid), 20, container_id=cid[:12]).status
    return {"id": cid, "state": STATE_NAMES.get(st.state, str(st.state)), "exit_code": st.exit_code,
            "reason": st.reason, "message": st.message, "started_at": st.started_at / 1e9 if st.started_at else None,
            "finished_at": st.finished_at / 1e9 if st.finished_at else None, "log_path": st.log_path,
            "attempt": st.metadata.attempt}


def version(sock: str) -> dict[str, str]:
    s = _Session(sock)
    try:
        v = s.call("Version", s.api.VersionRequest(), 10)
        return {"runtime_name": v.runtime_name, "runtime_version": v.runtime_version,
                "runtime_api_version": v.runtime_api_version}
    finally:
        s.close()


def start_pod(sock: str, sandbox: dict, containers: list[dict], runtime_handler: str = "",
              timeout: float = 120.0) -> dict[str, Any]:
    """RunPodSandbox, then CreateContainer + StartContainer per container (in order); stops at the
    first failure and says which stage it was (``sandbox``, ``create:<name>``, ``start:<name>``)."""
    s = _Session(sock)
    out: dict[str, Any] = {"sandbox_id": None, "ip": "", "containers": {}, "error": None, "events": s.events}
    stage = "sandbox"
    try:
        cfg = s.parse(sandbox, "PodSandboxConfig")
        r = s.call("RunPodSandbox", s.api.RunPodSandboxRequest(config=cfg, runtime_handler=runtime_handler), timeout)
        out["sandbox_id"] = r.pod_sandbox_id
        st = s.call("PodSandboxStatus", s.api.PodSandboxStatusRequest(pod_sandbox_id=r.pod_sandbox_id), 20).status
        out["ip"] = st.network.ip
        out["sandbox_state"] = SANDBOX_STATES.get(st.state, str(st.state))
        s.events.append({"t": time.time(), "kind": "state", "object": "sandbox", "state": out["sandbox_state"],
                         "ip": st.network.ip})
        for c in containers:
            name = c["metadata"]["name"]
            stage = f"create:{name}"
            cc = s.parse(c, "ContainerConfig")
            cr = s.call("CreateContainer", s.api.CreateContainerRequest(
                pod_sandbox_id=r.pod_sandbox_id, config=cc, sandbox_config=cfg), timeout, object=name)
            out["containers"][name] = cr.container_id
            stage = f"start:{name}"
            s.call("StartContainer", s.api.StartContainerRequest(container_id=cr.container_id), timeout,
                   object=name)
            cs = _container_status(s, cr.container_id)
            s.events.append({"t": time.time(), "kind": "state", "object": name, "state": cs["state"]})
    except _CallFailed as e:
        out["error"] = {"stage": stage, "call": e.call, "message": e.msg}
    finally:
        s.close()
    return out


def status(sock: str, sandbox_id: str, containers: dict[str, str]) -> dict[str, Any]:
    s = _Session(sock)
    out: dict[str, Any] = {"containers": {}, "events": s.events}
    try:
        st = s.call("PodSandboxStatus", s.api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id), 20).status
        out["sandbox_state"] = SANDBOX_STATES.get(st.state, str(st.state))
        out["ip"] = st.network.ip
        for name, cid in containers.items():
            out["containers"][name] = _container_status(s, cid)
    except _CallFailed as e:
        out["error"] = {"call": e.call, "message": e.msg}
    finally:
        s.close()
    return out


def restart_container(sock: str, sandbox_id: str, sandbox: dict, config: dict, old_id: str,
                      timeout: float = 60.0) -> dict[str, Any]:
    """What kubelet does for restartPolicy OnFailure/Always: remove the exited container, create and
    start the next attempt (its log goes to ``<name>/<attempt>.log``)."""
    s = _Session(sock)
    out: dict[str, Any] = {"container_id": None, "error": None, "events": s.events}
    name = config["metadata"]["name"]
    try:
        s.call("RemoveContainer", s.api.RemoveContainerRequest(container_id=old_id), timeout, object=name)
        cfg = s.parse(sandbox, "PodSandboxConfig")
        cr = s.call("CreateContainer", s.api.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=s.parse(config, "ContainerConfig"), sandbox_config=cfg), timeout,
            object=name, attempt=config["metadata"].get("attempt", 0))
        out["container_id"] = cr.container_id
        s.call("StartContainer", s.api.StartContainerRequest(container_id=cr.container_id), timeout, object=name)
    except _CallFailed as e:
        out["error"] = {"stage": f"restart:{name}", "call": e.call, "message": e.msg}
    finally:
        s.close()
    return out


def exec_sync(sock: str, container_id: str, cmd: list[str], timeout: float = 30.0) -> dict[str, Any]:
    s = _Session(sock)
    try:
        r = s.call("ExecSync", s.api.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=int(timeout)),
                   timeout + 10, cmd=" ".join(cmd)[:120])
        return {"stdout": r.stdout.decode(errors="replace"), "stderr": r.stderr.decode(errors="replace"),
                "exit_code": r.exit_code, "error": None, "events": s.events}
    except _CallFailed as e:
        return {"stdout": "", "stderr": "", "exit_code": None, "error": e.msg, "events": s.events}
    finally:
        s.close()


def stop_pod(sock: str, sandbox_id: str | None, containers: dict[str, str], grace: int = 5,
             remove: bool = True) -> dict[str, Any]:
    """StopContainer (grace seconds) each, StopPodSandbox, then RemoveContainer/RemovePodSandbox.
    Best effort: every call is tried even after a failure; failures are in the events."""
    s = _Session(sock)
    try:
        from concurrent.futures import ThreadPoolExecutor

        def stop_one(item: tuple[str, str]) -> None:
            name, cid = item
            with contextlib.suppress(_CallFailed):  # containers stop in parallel, as kubelet does
                s.call("StopContainer", s.api.StopContainerRequest(container_id=cid, timeout=grace), grace + 30,
                       object=name)
            if remove:
                with contextlib.suppress(_CallFailed):
                    s.call("RemoveContainer", s.api.RemoveContainerRequest(container_id=cid), 30, object=name)

        with ThreadPoolExecutor(max(1, len(containers))) as ex:
            list(ex.map(stop_one, containers.items()))
        if sandbox_id:
            calls = [("StopPodSandbox", s.api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))]
            if remove:
                calls.append(("RemovePodSandbox", s.api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)))
            for call, req in calls:
                with contextlib.suppress(_CallFailed):
                    s.call(call, req, 60)
    finally:
        s.close()
    return {"events": s.events}


def list_pods(sock: str) -> list[dict[str, Any]]:
    s = _Session(sock)
    try:
        items = s.call("ListPodSandbox", s.api.ListPodSandboxRequest(), 20).items
        return [{"id": i.id, "name": i.metadata.name, "namespace": i.metadata.namespace,
                 "state": SANDBOX_STATES.get(i.state, str(i.state))} for i in items]
    finally:
        s.close()
