"""``k3snb.Pod``: a Kubernetes Pod manifest run the way kubelet runs it, over CRI.

RunPodSandbox (the kit's pause image, the runtime's CNI network) → CreateContainer/StartContainer
per container (PID namespace CONTAINER unless ``shareProcessNamespace``, as kubelet does) →
statuses, exit codes and restartPolicy → logs from the CRI log files → ExecSync → stop and remove.
Every CRI call and state change is an event (``events()``/``to_frame()``).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter, K3snbError
from ..report import Rich, render
from . import _cri
from ._manifest import PodSpec, parse_manifest
from ._runtime import PodError, PodRuntime, classify_text

TERMINAL = "CONTAINER_EXITED"


def _cri_log_lines(text: str) -> list[tuple[str, str]]:
    """CRI log format: ``<RFC3339Nano> <stdout|stderr> <P|F> <text>``; P lines are partial."""
    out: list[tuple[str, str]] = []
    partial = ""
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        stream, tag, body = parts[1], parts[2], parts[3] if len(parts) > 3 else ""
        if tag == "P":
            partial += body
            continue
        out.append((stream, partial + body))
        partial = ""
    return out


class Pod(Rich):
    """A pod from a manifest (YAML path, dict or ``kubernetes.client.V1Pod``).

    Args:
        manifest: the Pod.
        runtime: a started :class:`PodRuntime` to share (two pods on one runner), or None to make one
            from ``runner``/``runsc``/``cni``/``container_runtime`` (stopped with the pod).
        timeout: seconds for CRI calls and :meth:`wait`.

    Example:
        >>> with k3snb.Pod("pod.yaml", runner="gvisor", runsc="2024") as p:
        ...     p.wait(); print(p.logs("main"))
    """

    _title_text = "pod"

    def __init__(self, manifest: Any, *, runtime: PodRuntime | None = None, runner: Any = "host",
                 runsc: str | None = None, cni: str = "bridge", container_runtime: str = "runc",
                 workarounds: bool = True, timeout: float = 120.0) -> None:
        self.spec: PodSpec = parse_manifest(manifest)  # bad input: UsageError before anything starts
        from .. import images as kimages

        for c in self.spec.containers:  # an image the builder cannot make fails here, nothing started
            kimages.get_image(c.image_source)
        self._own_runtime = runtime is None
        self.runtime = runtime or PodRuntime(runner, runsc=runsc, runtime=container_runtime, cni=cni,
                                             workarounds=workarounds, timeout=timeout)
        self.timeout = float(timeout)
        self.uid = str(uuid.uuid4())
        self.sandbox_id: str | None = None
        self.ip = ""
        self.container_ids: dict[str, str] = {}
        self.attempts: dict[str, int] = {c.name: 0 for c in self.spec.containers}
        self.restarts: dict[str, int] = {c.name: 0 for c in self.spec.containers}
        self._events: list[dict[str, Any]] = []
        self._last: dict[str, Any] = {}
        self.error: PodError | None = None
        self.deleted = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def log_dir(self) -> Path:
        return self.runtime.session_dir / "logs" / f"{self.spec.namespace}_{self.spec.name}_{self.uid}"

    # -- CRI configs -------------------------------------------------------------------------
    def _ns_options(self) -> dict[str, str]:
        # kubelet's choice; under the pid-node workaround the runtime wrapper drops the PID namespace
        pid = "POD" if self.spec.share_process_namespace else "CONTAINER"
        return {"network": "NODE" if self.spec.host_network else "POD", "pid": pid, "ipc": "POD"}

    def sandbox_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "metadata": {"name": self.spec.name, "namespace": self.spec.namespace, "uid": self.uid, "attempt": 0},
            "log_directory": str(self.log_dir),
            "labels": {**self.spec.labels, "io.kubernetes.pod.name": self.spec.name,
                       "k3snb.session": self.runtime.id},
            "linux": {"security_context": {"namespace_options": self._ns_options()}},
        }
        if self.runtime.annotations:  # the runtime's workarounds that travel as pod annotations (crun-setgroups)
            cfg["annotations"] = dict(self.runtime.annotations)
        if not self.spec.host_network:  # a hostname needs the pod's own UTS namespace
            cfg["hostname"] = self.spec.name[:63]
        if self.runtime.runner.capabilities.has_real_cgroups:  # named, so stop()/the reaper remove them
            cfg["linux"]["cgroup_parent"] = f"{self.runtime.cgroup_parent}/pod{self.uid[:8]}"
        return cfg

    def container_config(self, name: str) -> dict[str, Any]:
        c = self.spec.container(name)
        attempt = self.attempts[name]
        cfg: dict[str, Any] = {
            "metadata": {"name": c.name, "attempt": attempt},
            "image": {"image": self.runtime.images[c.image_source]},
            "command": c.command, "args": c.args,
            "envs": [{"key": k, "value": v} for k, v in c.env.items()],
            "log_path": f"{c.name}/{attempt}.log",
            "labels": {"io.kubernetes.container.name": c.name},
            "linux": {"security_context": {"namespace_options": self._ns_options()}},
        }
        if c.working_dir:
            cfg["working_dir"] = c.working_dir
        return cfg

    # -- lifecycle ---------------------------------------------------------------------------
    def _add(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            self._events.append({"pod": self.name, **e})

    def start(self) -> Pod:
        """Start the runtime if needed, then the sandbox and every container; raises PodError at the first
        stage that fails (``err.stage``, ``err.signature``)."""
        if self.sandbox_id:
            return self
        rt = self.runtime
        try:
            if not rt.started:
                rt.start()
            if self not in rt.pods:
                rt.pods.append(self)
            for ev in rt.events:
                if ev["kind"] in ("workaround", "probe"):
                    self._add([ev])
            if self.spec.ignored:
                self._add([{"t": time.time(), "kind": "note",
                            "detail": f"fields accepted but not acted on: {', '.join(self.spec.ignored)}"}])
            rt.ensure_images([c.image_source for c in self.spec.containers])
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = rt.call(_cri.start_pod, self.sandbox_config(),
                          [self.container_config(c.name) for c in self.spec.containers], "", self.timeout)
        except PodError as e:
            self.error = e
            self._fail_event(e.fields.get("stage", ""), e.msg, e.fields.get("signature"))
            self.delete()
            raise
        except BaseException:
            self.delete()
            raise
        self._add(out["events"])
        self.sandbox_id = out["sandbox_id"]
        self.ip = out.get("ip", "")
        self.container_ids.update(out["containers"])
        if out["error"]:
            err = out["error"]
            text = err["message"] + "\n" + self._runtime_debug_text()
            sig = next(iter(classify_text(err["message"])), None) or next(iter(classify_text(text)), None)
            self.error = PodError(f"{err['stage']} failed: {err['message']}", stage=err["stage"], signature=sig)
            self._fail_event(err["stage"], err["message"], sig)
            self.delete()
            raise self.error
        return self

    def _fail_event(self, stage: str, message: str, signature: str | None) -> None:
        self._add([{"t": time.time(), "kind": "failed", "stage": stage, "error": message, "signature": signature}])
        if self.runtime.trace:  # after stop(), the tracer's record names the refusing syscall
            self.runtime.failures.append((self, stage, message))

    def _runtime_debug_text(self) -> str:
        return self.runtime.containerd_log(60)

    def status(self) -> dict[str, Any]:
        """Sandbox state, IP, and per container: state, exit code, reason, restarts (one CRI batch)."""
        if not self.sandbox_id or self.deleted:
            return {"phase": "Deleted" if self.deleted else ("Failed" if self.error else "Pending"), "ip": self.ip,
                    "containers": {}}
        out = self.runtime.call(_cri.status, self.sandbox_id, dict(self.container_ids))
        prev = self._last.get("containers", {})
        for name, st in out["containers"].items():
            st["restarts"] = self.restarts[name]
            if prev.get(name, {}).get("state") != st["state"]:
                self._add([{"t": time.time(), "kind": "state", "object": name, "state": st["state"],
                            "exit_code": st["exit_code"] if st["state"] == TERMINAL else None}])
        self._last = out
        out["phase"] = self._phase(out)
        return {k: v for k, v in out.items() if k != "events"}

    def _phase(self, st: dict[str, Any]) -> str:
        cs = st.get("containers", {})
        if not cs:
            return "Pending"
        states = [c["state"] for c in cs.values()]
        if all(s == TERMINAL for s in states):
            return "Succeeded" if all(c["exit_code"] == 0 for c in cs.values()) else "Failed"
        return "Running" if "CONTAINER_RUNNING" in states else "Pending"

    def _should_restart(self, exit_code: int) -> bool:
        p = self.spec.restart_policy
        return p == "Always" or (p == "OnFailure" and exit_code != 0)

    def wait(self, timeout: float | None = None, interval: float = 0.5, until: str = "done") -> dict[str, Any]:
        """Poll statuses, restarting exited containers per restartPolicy, until every container has
        exited for good (``until="done"``) or all run (``until="running"``); returns the last status."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            st = self.status()
            cs = st.get("containers", {})
            if until == "running" and cs and all(c["state"] == "CONTAINER_RUNNING" for c in cs.values()):
                return st
            pending = False
            for name, c in cs.items():
                if c["state"] != TERMINAL:
                    pending = True
                elif self._should_restart(c["exit_code"]):
                    pending = True  # the policy keeps it going: not done, even at the deadline
                    if time.monotonic() < deadline:
                        self._restart(name, c)
            if not pending and until == "done":
                return st
            if time.monotonic() >= deadline:
                st["timed_out"] = True
                return st
            time.sleep(interval)

    def _restart(self, name: str, c: dict[str, Any]) -> None:
        self.attempts[name] += 1
        self.restarts[name] += 1
        self._add([{"t": time.time(), "kind": "restart", "object": name, "exit_code": c["exit_code"],
                    "policy": self.spec.restart_policy, "attempt": self.attempts[name]}])
        time.sleep(min(0.5 * 2 ** (self.restarts[name] - 1), 5))  # kubelet backs off too
        out = self.runtime.call(_cri.restart_container, self.sandbox_id, self.sandbox_config(),
                                self.container_config(name), self.container_ids[name])
        self._add(out["events"])
        if out["container_id"]:
            self.container_ids[name] = out["container_id"]

    def exit_codes(self) -> dict[str, int | None]:
        st = self._last.get("containers") or self.status().get("containers", {})
        return {n: (c["exit_code"] if c["state"] == TERMINAL else None) for n, c in st.items()}

    def logs(self, container: str | None = None, *, previous: bool = False, streams: bool = False) -> str | list:
        """The container's output read from its CRI log file (``<name>/<attempt>.log``)."""
        c = self.spec.container(container)
        attempt = self.attempts[c.name] - (1 if previous else 0)
        if attempt < 0:
            raise InvalidParameter(f"container {c.name} has no previous attempt", hint="call logs() without previous")
        path = self.log_dir / c.name / f"{attempt}.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            text = ""
        lines = _cri_log_lines(text)
        if streams:
            return lines
        return "".join(body + "\n" for _, body in lines)

    def watch(self, **kw: Any):
        """Live view of this pod: its runtime's processes (containerd, shims, containers; for gVisor the
        sandbox), CPU/memory sparklines and the latest classified lines of the pod's container logs,
        refreshed every second until the cell is interrupted (a static snapshot without a front end).
        Keywords go to :func:`k3snb.monitoring.watch` (interval, duration, lines, live)."""
        from types import SimpleNamespace

        from ..monitoring import _handle_roots, watch

        def roots() -> list[int]:
            # containerd (for gVisor: the sandbox), plus the pod's shim: it daemonizes away from containerd,
            # and the pod's pause and containers are its children
            return _handle_roots(self.runtime) + _pids_with_arg(getattr(self, "sandbox_id", None))

        return watch(SimpleNamespace(root_pids=roots), log=kw.pop("log", lambda: self.logs()),
                     title=kw.pop("title", f"pod {self.name}"), **kw)

    def exec(self, container: str | None, cmd: list[str] | str, timeout: float = 30.0) -> dict[str, Any]:
        """ExecSync in a running container: ``{"stdout", "stderr", "exit_code"}``."""
        c = self.spec.container(container)
        if c.name not in self.container_ids:
            raise PodError(f"container {c.name} was never created", stage="exec")
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        out = self.runtime.call(_cri.exec_sync, self.container_ids[c.name], argv, timeout)
        self._add(out.pop("events"))
        if out["error"]:
            sig = next(iter(classify_text(out["error"])), None)
            self._fail_event("exec", out["error"], sig)
            raise PodError(f"exec failed: {out['error']}", stage="exec", signature=sig)
        return out

    def delete(self) -> None:
        """StopContainer/StopPodSandbox/Remove*; stops the runtime too when the pod made it. Idempotent."""
        if self.deleted:
            return
        self.deleted = True
        rt = self.runtime
        try:
            if self.sandbox_id and rt.started and rt.runner is not None:
                try:
                    out = rt.call(_cri.stop_pod, self.sandbox_id, dict(self.container_ids),
                                  min(self.spec.grace_seconds, 2), timeout=120)
                    self._add(out["events"])
                except K3snbError as e:  # the runtime's stop still ends everything; say why this did not
                    self._add([{"t": time.time(), "kind": "failed", "stage": "delete", "error": str(e)[-800:]}])
        finally:
            if self.sandbox_id and rt.runner is not None and rt.runner.capabilities.has_real_cgroups:
                # kubelet removes a pod's cgroup parent after its sandbox; containerd does not
                from ._runtime import _remove_cgroup_trees

                _remove_cgroup_trees([f"{d}{rt.cgroup_parent}/pod{self.uid[:8]}" for d in Path("/sys/fs/cgroup").iterdir()])
            if self in rt.pods:
                rt.pods.remove(self)
            if self._own_runtime:
                rt.stop()

    stop = delete

    def __enter__(self) -> Pod:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.delete()

    # -- results -----------------------------------------------------------------------------
    def events(self) -> list[dict[str, Any]]:
        """Timeline: CRI calls, state changes, restarts, workarounds, failures (time order)."""
        return sorted(self._events, key=lambda e: e.get("t", 0))

    def to_frame(self):
        import pandas as pd

        ev = self.events()
        df = pd.DataFrame(ev)
        if not df.empty:
            df["t_s"] = (df["t"] - df["t"].min()).round(3)
        return df

    def classify(self):
        """The kit's classifier over every error this pod met plus the containerd log."""
        from ..signatures import classify

        errors = [str(e.get("error", "")) for e in self._events if e.get("error")]
        return classify("\n".join(errors) + "\n" + self.runtime.containerd_log(400))

    def summary(self) -> dict[str, Any]:
        phase = self._phase(self._last) if self._last else ("Failed" if self.error else "Pending")
        return {"pod": self.name, "runner": self.runtime.runner_label(), "runtime": self.runtime.runtime,
                "cni": self.runtime.cni + (" (kit link mode)" if self.runtime.link_mode else ""),
                "ip": self.ip or None, "phase": "Deleted" if self.deleted and not self.error else phase,
                "failed_stage": self.error.fields.get("stage") if self.error else None,
                "signature": self.error.fields.get("signature") if self.error else None}

    def _repr_html_(self) -> str:
        import pandas as pd

        rows = [{"container": c.name, "image": c.image, "restarts": self.restarts[c.name],
                 **{k: v for k, v in (self._last.get("containers", {}).get(c.name) or {}).items()
                    if k in ("state", "exit_code", "reason")}} for c in self.spec.containers]
        cols = [c for c in ("pod", "kind", "call", "object", "state", "ok", "duration_s", "error", "t_s")
                if c in self.to_frame().columns]
        return render(f"pod {self.name}", self.summary(), [("containers", pd.DataFrame(rows)),
                                                           ("timeline", self.to_frame()[cols])],
                      text=self._repr_text())


def _pids_with_arg(arg: str | None) -> list[int]:
    """Host pids whose command line has ``arg`` as one argument (a shim's ``-id <sandbox id>``)."""
    if not arg:
        return []
    import psutil

    out = []
    for proc in psutil.process_iter(["cmdline"]):
        if arg in (proc.info.get("cmdline") or []):
            out.append(proc.pid)
    return out
