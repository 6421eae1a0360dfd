"""Helpers behind the k3s experiment notebooks (01, 02, 05, 12, 13, 15, 16), so the notebooks stay
thin and everything they compute is reachable from tests.

Each notebook: (1) checks for a k3s binary (``k3s_status``); (2) gathers evidence that needs no k3s
(the research's quoted log lines through the classifier, workaround apply/check/revert in the runner);
(3) when k3s exists, launches the profile and judges the claim (``judge``); otherwise the verdict
is ``not-testable`` with the reason.
"""

from __future__ import annotations

import shutil
import time
from functools import cache
from importlib import resources
from typing import Any

from ..errors import K3sBinaryMissing, K3snbError, WorkaroundFailed

CLAIMS = {
    "01": "Exp 01 / C6: `k3s server --disable-agent` alone brings the API server up (no hang waiting for agent config)",
    "02": "Exp 02: a native worker with the Exp 02 fixes ends at the rootfs-info error (S03)",
    "05": "Exp 05: the control plane with a fake host-local on PATH reaches API readiness",
    "12": "Exp 12: --local-storage-capacity-isolation=false removes the rootfs-info error (S03)",
    "13": "Exp 13: the 'ultimate' set clears the six blockers (S01, S02, S03, S06, S15, S17)",
    "15": "Exp 15 / C9: the worker-stable set keeps k3s alive for the observation window (node registered, NotReady)",
    "16": "Exp 16 / §9.4: manifests install through the API of the control plane (kubernetes client)",
}
SIX_BLOCKERS = ("S01", "S02", "S03", "S06", "S15", "S17")


@cache
def research_quotes() -> dict[str, list[str]]:
    import yaml

    return yaml.safe_load(resources.files("k3snb").joinpath("data/k3s-research-quotes.yaml").read_text())


def classify_quotes(exp: str):
    """The classifier over the log lines the research quoted for experiment ``exp`` (e.g. "05")."""
    from ..signatures import classify

    return classify(research_quotes()[exp])


def k3s_status() -> dict[str, Any]:
    """``{"available": bool, "reason": str, "path", "source", "version"}`` — never raises for absence."""
    from .binary import find_k3s

    try:
        b = find_k3s()
        return {"available": True, "reason": "", **b.to_dict()}
    except K3sBinaryMissing as e:
        return {"available": False, "reason": f"{e.msg}. {e.hint}"}
    except K3snbError as e:  # a binary that does not run
        return {"available": False, "reason": str(e)}


def make_runner(runner: str, runsc: str | None = None, **options: Any):
    from ..runners import get_runner

    if runner == "gvisor":
        return get_runner("gvisor", runsc=runsc, **options)
    return get_runner(runner, **options)


def workaround_cycle(runner: str, ids: list[str], runsc: str | None = None, params: dict | None = None,
                     **runner_options: Any):
    """apply → check → revert → check of each workaround in a fresh runner; one row per workaround."""
    import pandas as pd

    from ..workarounds import get_workaround

    rows = []
    with make_runner(runner, runsc, **runner_options) as r:
        for wid in ids:
            w = get_workaround(wid, **(params or {}).get(wid, {}))
            row: dict[str, Any] = {"workaround": wid, "research": ", ".join(w.research), "runner": r.kind}
            try:
                a = w.apply(r)
                row["apply"] = a.ok
                c = w.check(r)
                row["check"] = c.ok
                row["check_detail"] = str(c.detail)[:240]
                rv = w.revert(r)
                row["revert"] = rv.ok
                row["in_effect_after_revert"] = w.check(r).ok
            except WorkaroundFailed as e:
                row.update(apply=False, check=False, revert=None, in_effect_after_revert=False,
                           check_detail=str(e.msg)[:240])
            rows.append(row)
    return pd.DataFrame(rows)


def run_profile(profile: str, runner: str, runsc: str | None = None, *, timeout: float = 240,
                observe: float = 0.0, monitor_interval: float = 2.0, manifests: str | None = None,
                helm: bool = False, **launch: Any) -> dict[str, Any]:
    """Launch a profile, optionally observe it for ``observe`` s with resource sampling, apply
    manifests, classify the log, stop; returns plain data for ``k3snb.record`` and ``judge``."""
    from .cluster import launch_k3s

    options = dict(launch.pop("runner_options", {}) or {})
    if runner == "gvisor":
        options.setdefault("runsc", runsc)
    out: dict[str, Any] = {"profile": profile, "runner": runner}
    c = launch_k3s(profile, runner=runner, runner_options=options, timeout=timeout, **launch)
    try:
        m = c.monitor(interval=monitor_interval)
        t_end = time.monotonic() + observe
        while time.monotonic() < t_end and c.alive():
            time.sleep(min(5.0, max(0.1, t_end - time.monotonic())))
            c.poll_readiness()
        out["alive_at_end"] = c.alive()
        out["observed_s"] = observe
        if manifests and c.readiness.stages["readyz"].reached:
            out["manifests"] = c.apply_manifests(manifests).to_dict(orient="records")
            out["objects"] = c.objects()
        if helm and shutil.which("helm") and c.readiness.stages["readyz"].reached:
            out["helm"] = helm_install(c)
        m.stop()
        out["samples"] = m.totals().to_dict(orient="records")
        out["monitor"] = m.summary()
        out["info"] = c.info()
        out["readiness"] = c.readiness.to_dict()
        cls = c.classify()
        out["signatures"] = cls.ids
        out["furthest_stage"] = cls.furthest_stage
        out["log_tail"] = c.logs(tail=60)
    finally:
        out["stop"] = {k: str(v)[:200] for k, v in c.stop().items()}
    return out


def _has(ids: list[str], prefix: str) -> bool:
    return any(i == prefix or (i.startswith(prefix) and not i[len(prefix):].isdigit()) for i in ids)


def judge(exp: str, k3s: dict[str, Any], run: dict[str, Any] | None,
          extra: dict[str, Any] | None = None) -> tuple[str, str, list[str], str]:
    """(claim, status, evidence keys, reason) for ``k3snb.verdict``; ``not-testable`` without k3s."""
    claim = CLAIMS[exp]
    evidence = ["k3s", "research_quotes"] + (["run"] if run else [])
    if not k3s.get("available") or run is None:
        return claim, "not-testable", evidence, "no k3s binary here: " + (k3s.get("reason") or "not found")
    rd = run["readiness"]["summary"]
    ids = run.get("signatures", [])
    stages = {s["stage"]: s["reached"] for s in run["readiness"]["stages"]}
    if exp in ("01", "05"):
        if rd["ok"]:
            return claim, "reproduced", evidence, f"readyz reached in {_secs(run, 'readyz')} s"
        why = "hang signature S11 seen" if "S11" in ids else f"reached {rd['reached']}; blockers {ids}"
        return claim, "refuted", evidence, why
    if exp == "02":
        if stages.get("node-ready"):
            return claim, "refuted", evidence, "the node became Ready"
        if _has(ids, "S03"):
            return claim, "reproduced", evidence, f"S03 seen; all blockers {ids}"
        return claim, "inconclusive", evidence, f"S03 not seen; reached {rd['reached']}; blockers {ids}"
    if exp == "12":
        without = (extra or {}).get("without_flag") or {}
        w_ids = without.get("signatures", [])
        if _has(ids, "S03"):
            return claim, "refuted", evidence + ["run_without_flag"], "S03 still present with the flag"
        if _has(w_ids, "S03"):
            return claim, "reproduced", evidence + ["run_without_flag"], f"S03 only without the flag; next: {ids}"
        return claim, "inconclusive", evidence + ["run_without_flag"], "S03 absent in both runs"
    if exp == "13":
        left = [b for b in SIX_BLOCKERS if _has(ids, b)]
        if left:
            return claim, "refuted", evidence, f"still present: {left}"
        return claim, "reproduced", evidence, f"none of the six; reached {rd['reached']}; other signatures {ids}"
    if exp == "15":
        if run.get("alive_at_end") and stages.get("node-registered"):
            state = "Ready" if stages.get("node-ready") else "NotReady"
            return claim, "reproduced", evidence, f"alive after {run['observed_s']} s, node {state}"
        return claim, "refuted", evidence, f"alive={run.get('alive_at_end')}, reached {rd['reached']}, blockers {ids}"
    if exp == "16":
        rows = run.get("manifests") or []
        if rows and all(r["created"] for r in rows):
            return claim, "reproduced", evidence, f"{len(rows)} objects created through the API"
        if not rd["ok"]:
            return claim, "inconclusive", evidence, f"API not ready (reached {rd['reached']})"
        return claim, "refuted", evidence, f"failed: {[r for r in rows if not r['created']]}"
    raise KeyError(exp)


def _secs(run: dict[str, Any], stage: str) -> Any:
    return next((s["seconds"] for s in run["readiness"]["stages"] if s["stage"] == stage), None)


EXAMPLE_MANIFESTS = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: k3snb-demo}
data: {greeting: hello}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: k3snb-nginx}
spec:
  replicas: 2
  selector: {matchLabels: {app: k3snb-nginx}}
  template:
    metadata: {labels: {app: k3snb-nginx}}
    spec:
      hostNetwork: true
      containers:
        - name: nginx
          image: nginx:alpine
          resources:
            limits: {cpu: 200m, memory: 128Mi}
            requests: {cpu: 100m, memory: 64Mi}
---
apiVersion: v1
kind: Service
metadata: {name: k3snb-nginx}
spec:
  type: ClusterIP
  selector: {app: k3snb-nginx}
  ports: [{port: 80, targetPort: 80}]
"""


def manifest_summary(text: str = EXAMPLE_MANIFESTS):
    """The manifests as parsed documents (kind, name) — checked before any cluster exists."""
    import pandas as pd
    import yaml

    docs = [d for d in yaml.safe_load_all(text) if d]
    return pd.DataFrame([{"apiVersion": d["apiVersion"], "kind": d["kind"], "name": d["metadata"]["name"]}
                         for d in docs])


def helm_install(cluster, name: str = "k3snb-demo") -> dict[str, Any]:
    """``helm create`` a chart in the cluster's work dir and ``helm install`` it inside the runner."""
    helm = shutil.which("helm")
    chart = f"{cluster.dir}/{name}"
    env = {"KUBECONFIG": str(cluster.kubeconfig), "HOME": str(cluster.dir), "HELM_CACHE_HOME": f"{cluster.dir}/.helm"}
    made = cluster.runner.run([helm, "create", chart], env=env, timeout=120)
    inst = cluster.runner.run([helm, "install", name, chart, "--wait=false"], env=env, timeout=300)
    return {"create_rc": made.returncode, "install_rc": inst.returncode,
            "output": (inst.stdout + inst.stderr)[-1500:], "deployed": "STATUS: deployed" in inst.stdout}


def helm_status() -> dict[str, Any]:
    h = shutil.which("helm")
    return {"helm": h, "note": "helm install is attempted only when a helm binary exists" if not h else ""}
