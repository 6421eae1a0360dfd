"""Measurements for the pod notebooks (32, 20/23): one pod attempt per configuration → one row.

A row says how far a two-step pod got — runtime stages (runner … images), then ``sandbox`` (RunPodSandbox
with its CNI network), ``running`` (a container reached CONTAINER_RUNNING), ``logs`` (its output read back
from the CRI log), ``exec`` (ExecSync answered), ``reach`` (a second pod fetched from the first by pod IP) —
the first failing stage with its error, signature and the refusing operation where the kit knows it, and
the probes and workarounds the runtime recorded, and the versions of containerd (``containerd``) and of the
OCI runtime (``runtime_version``) as read inside the runner (None: not recorded). Verdicts on these rows live in :mod:`k3snb.studies.pods`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from ._runtime import PodError, PodRuntime

STAGES = ("runner", "cgroups", "probes", "network", "containerd", "images", "sandbox", "running", "logs", "exec",
          "reach")
# the syscall / netlink request behind a signature, as measured by the runtime's probes
REFUSING = {
    "S29": "RTM_NEWLINK creates the bridge; RTM_GETLINK reply lacks IFLA_LINKINFO/IFLA_INFO_KIND",
    "N01": "setns(fd of /proc/<pid>/ns/pid, CLONE_NEWPID) = EINVAL",
    "N02": "setns(fd of /proc/<pid>/ns/pid, CLONE_NEWPID) = EINVAL (runc exec)",
    "N03": "setns(fd of /proc/<pid>/ns/pid, CLONE_NEWPID) = EINVAL (runc nsexec child)",
    "N04": "RTM_DELROUTE = EOPNOTSUPP",
    "R01": "mount(2) of containerd's tmpmount (bind) = EINVAL",
    "R05": "open(/proc/self/setgroups) = ENOENT",
    "R10": "open(/sys/fs/cgroup/freezer/<cgroupsPath>/freezer.state) = ENOENT (crun exec)",
}

WEB = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
       "spec": {"restartPolicy": "Never", "containers": [{
           "name": "web", "image": "busybox",
           "command": ["sh", "-c", "echo web-up; mkdir -p /www; echo hello-from-web > /www/index.html; "
                       "exec httpd -f -p 8080 -h /www"]}]}}
CLIENT = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
          "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "120"]}]}}


def _manifest(share_pid: bool) -> dict[str, Any]:
    import copy

    m = copy.deepcopy(WEB)
    if share_pid:
        m["spec"]["shareProcessNamespace"] = True
    return m


def attempt(runner: str = "gvisor", *, runsc: str | None = "2024", runtime: str = "runc", cni: str = "bridge",
            workarounds: bool | Iterable[str] = True, share_pid: bool = False, reach: bool = True,
            label: str | None = None, trace: bool = False) -> dict[str, Any]:
    """Run one pod (and, for ``reach``, a client pod) on a fresh runtime; return the evidence row.

    ``trace``: containerd and everything it starts run under the kit's tracer; a failing row's
    ``syscall`` is then the refusing call the tracer saw (``refusing`` says it in words)."""
    rt = PodRuntime(runner, runsc=runsc, runtime=runtime, cni=cni, workarounds=workarounds, trace=trace)
    row: dict[str, Any] = {"label": label, "env": rt.runner_label(), "runtime": runtime, "runtime_version": None,
                           "containerd": None, "cni": cni,
                           "share_pid": share_pid, "workarounds_allowed": sorted(rt.workarounds_enabled),
                           "passed": [], "failed_stage": None, "error": None, "signature": None, "refusing": None,
                           "ip": None, "exec_exit": None, "reach_body": None, "syscall": None}
    t0 = time.monotonic()
    passed = row["passed"]
    try:
        with rt:
            passed += [s["stage"] for s in rt.stages if s["ok"]]
            pod = rt.pod(_manifest(share_pid))
            with pod:
                passed.append("sandbox")
                row["ip"] = pod.ip
                st = pod.wait(until="running", timeout=30)
                if st.get("timed_out"):
                    raise PodError(f"running failed: containers {st.get('containers')}", stage="running")
                passed.append("running")
                deadline = time.monotonic() + 15
                while not pod.logs("web") and time.monotonic() < deadline:
                    time.sleep(0.3)
                if pod.logs("web") != "web-up\n":
                    raise PodError(f"logs failed: read {pod.logs('web')!r}", stage="logs")
                passed.append("logs")
                out = pod.exec("web", "echo exec-ok; exit 3")
                row["exec_exit"] = out["exit_code"]
                if out["stdout"] != "exec-ok\n" or out["exit_code"] != 3:
                    raise PodError(f"exec failed: {out}", stage="exec")
                passed.append("exec")
                if reach:
                    with rt.pod(CLIENT) as q:
                        q.wait(until="running", timeout=30)
                        got = q.exec("c", ["wget", "-q", "-O-", f"http://{pod.ip}:8080/index.html"])
                        row["reach_body"] = got["stdout"].strip()
                        if got["exit_code"] != 0 or row["reach_body"] != "hello-from-web":
                            raise PodError(f"reach failed: wget exit {got['exit_code']}: {got['stderr'][-200:]}",
                                           stage="reach")
                    passed.append("reach")
            row["events"] = [e for e in pod.events() if e["kind"] in ("workaround", "probe", "failed")]
    except PodError as e:
        stage = e.fields.get("stage") or "?"
        stage = stage.split(":", 1)[0]
        row["failed_stage"] = {"create": "running", "start": "running"}.get(stage, stage)
        row["error"] = e.msg
        row["signature"] = e.fields.get("signature")
        if not passed:
            passed += [s["stage"] for s in rt.stages if s["ok"]]
        if e.fields.get("stage", "").startswith(("create:", "start:")):
            passed.append("sandbox")  # RunPodSandbox answered; a container step failed
    row["passed"] = [s for s in STAGES if s in passed]
    row["furthest"] = row["passed"][-1] if row["passed"] else None
    row["refusing"] = REFUSING.get(row["signature"] or "")
    if rt.trace_result is not None:
        try:
            sc = rt.evidence(row["error"]) if row["error"] else None
        finally:
            rt.trace_result.close()
        if sc:  # measured beats the catalogue's sentence
            row["syscall"] = {k: sc.get(k) for k in ("exe", "syscall", "path", "errno")}
            path = re.sub(r"\b[0-9a-f]{64}\b", "<id>", sc.get("path") or "…")  # container ids vary per run
            row["refusing"] = f"{sc['syscall']}({path}) = {sc['errno']} (traced: {sc.get('exe')})"
    # the versions read inside the runner (None: not recorded, e.g. containerd never came up)
    row["runtime_version"], row["containerd"] = rt.versions.get(runtime), rt.versions.get("containerd")
    row["workarounds"] = [w["id"] for w in rt.workarounds]
    row["probes"] = {e["id"]: {k: v for k, v in e.items() if k not in ("t", "kind", "id")}
                     for e in rt.events if e["kind"] == "probe"}
    row["seconds"] = round(time.monotonic() - t0, 1)
    return row


def frame(rows: list[dict[str, Any]]):
    """The rows as a table (one line per configuration), without machine-specific values."""
    import pandas as pd

    cols = ["label", "env", "runtime", "runtime_version", "containerd", "cni", "share_pid", "furthest", "failed_stage", "signature", "workarounds",
            "refusing"]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    df["workarounds"] = df["workarounds"].map(lambda w: ", ".join(w) if w else "-")
    return df.fillna("-")
