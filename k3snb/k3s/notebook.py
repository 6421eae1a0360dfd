"""Helpers behind the k3s experiment notebooks (01, 02, 05, 12, 13, 15, 16), so the notebooks stay
thin and everything they compute is reachable from tests.

Each notebook: (1) checks for a k3s binary (``k3s_status``); (2) gathers evidence that needs no k3s
(the research's quoted log lines through the classifier, workaround apply/check/revert in the runner);
(3) when k3s exists, launches the profile. The verdicts are ``k3snb.studies.k3s`` functions of what
these helpers return.
"""

from __future__ import annotations

import shutil
import time
from functools import cache
from importlib import resources
from typing import Any

from ..errors import K3sBinaryMissing, K3snbError, WorkaroundFailed


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
    """A runner from a spec (``gvisor``, ``gvisor:2024``, ``host``); options a runner does not use are recorded
    as ignored by it, never an error (``net_raw=True`` is harmless on the host)."""
    from ..runners import resolve

    return resolve(runner, runsc=runsc, **options)


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
                c = w.verify(r)
                row["verify"] = c.ok
                row["verify_detail"] = str(c.detail)[:240]
                rv = w.revert(r)
                row["revert"] = rv.ok
                row["in_effect_after_revert"] = w.verify(r).ok
            except WorkaroundFailed as e:
                row.update(apply=False, verify=False, revert=None, in_effect_after_revert=False,
                           verify_detail=str(e.msg)[:240])
            rows.append(row)
    return pd.DataFrame(rows)


def run_profile(profile: str, runner: str, runsc: str | None = None, *, timeout: float = 240,
                observe: float = 0.0, monitor_interval: float = 2.0, manifests: str | None = None,
                helm: bool = False, **launch: Any) -> dict[str, Any]:
    """Launch a profile, optionally observe it for ``observe`` s with resource sampling, apply
    manifests, classify the log, stop; returns plain data for ``k3snb.record`` and ``k3snb.studies.k3s``."""
    from ..runners import resolve
    from .cluster import launch_k3s

    options = dict(launch.pop("runner_options", {}) or {})
    r = resolve(runner, runsc=runsc, **options)
    out: dict[str, Any] = {"profile": profile, "runner": r.label}
    c = launch_k3s(profile, runner=r, timeout=timeout, **launch)
    try:
        m = c.monitor(interval=monitor_interval)
        if manifests and c.readiness.stages["readyz"].reached:  # before observing: pods need the time
            out["manifests"] = c.apply_manifests(manifests).to_dict(orient="records")
        t0 = time.monotonic()
        while time.monotonic() < t0 + observe and c.alive():
            time.sleep(min(5.0, max(0.1, t0 + observe - time.monotonic())))
            c.poll_readiness()
        out["alive_at_end"] = c.alive()
        # how long k3s was watched alive: the whole window, or until it died
        out["observed_s"] = observe if out["alive_at_end"] else round(time.monotonic() - t0, 1)
        if manifests and c.readiness.stages["readyz"].reached:
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
      tolerations: [{operator: Exists}]  # the node stays NotReady without a CNI: schedule anyway
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
