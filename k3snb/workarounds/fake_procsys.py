"""W12: fake ``/proc/sys`` through k3snb's syscall interceptor (k3snb.trace).

apply() writes the fake tree (``k3snb.tracing.fake_procsys``: the keys k3s/kubelet/kube-proxy need,
from the probe of *this* runner) plus a rules file, and contributes a wrapper so k3s runs as
``python -m k3snb.tracing intercept --rules RULES --log LOG -- k3s server …``. check() runs ``cat`` on
kubelet's tunables under that same wrapper inside the runner and compares with the fake tree.
Bind-mounting files onto /proc/sys (W18) cannot work where the keys are missing; this can.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from . import _ops
from ._base import LaunchPlan, Workaround
from .mounts import DISKSTATS

CHECK_KEYS = ("kernel/panic", "vm/panic_on_oom", "kernel/keys/root_maxkeys")


class FakeProcSys(Workaround):
    id = "fake-procsys"
    params = {"probe": "auto", "diskstats": True, "check_keys": CHECK_KEYS}

    def wrapper(self, python: str, rules: str, log: str) -> list[str]:
        from ..tracing._launch import tracer_argv

        return [*tracer_argv(python), "intercept", "--rules", rules, "--log", log, "--"]

    def _apply(self, runner, plan: LaunchPlan) -> dict[str, Any]:
        from ..tracing import Rule, fake_procsys, save_rules

        base = Path(plan.work_dir) / "fake-procsys"
        tree = base / "tree"
        tree.mkdir(parents=True, exist_ok=True)
        pr = self.options["probe"]
        if pr == "auto":  # fake what *this* runner lacks, not what the host lacks
            from ..probing import probe

            pr = probe(runner)
        out = fake_procsys(tree, pr)
        rules = list(out if isinstance(out, (list, tuple)) else out.rules)
        if self.options["diskstats"]:
            rules.append(Rule.fake("/proc/diskstats", DISKSTATS, note="k3snb fake-procsys: W7 diskstats"))
        rules_file = save_rules(base / "rules.json", rules)
        log = base / "intercept.log"
        w = self.wrapper(runner.python, str(rules_file), str(log))
        plan.wrappers.append(w)
        return {"dir": str(base), "tree": str(tree), "rules": str(rules_file), "log": str(log), "wrapper": w,
                "n_rules": len(rules)}

    def _check(self, runner) -> tuple[bool, dict[str, Any]]:
        if not self.state:
            return False, {"note": "not applied"}
        import json

        base = Path(self.state["dir"])
        if not Path(self.state["rules"]).exists():
            return False, {"note": "rules file missing"}
        rules = json.loads(Path(self.state["rules"]).read_text())["rules"]
        redirects = [r for r in rules if r.get("kind") == "redirect" and r["path"].startswith("/proc/sys/")]
        picked = [r for r in redirects if r["path"][len("/proc/sys/"):] in self.options["check_keys"]]
        picked = (picked or redirects)[:4]
        w = self.wrapper(runner.python, self.state["rules"], str(base / "check.log"))
        rows: dict[str, Any] = {"redirect_rules": len(redirects)}
        ok = True
        if not picked:  # the runner provides every key natively: the wrapper must still run k3s's reads
            res = self._call(runner, _ops.run_cmd, [*w, "cat", "/proc/sys/kernel/pid_max"], timeout=120)
            rows["no-fakes-needed"] = {"read_under_interceptor": res["stdout"].strip(), "rc": res["returncode"],
                                       "stderr": res["stderr"].strip()[-200:]}
            return res["ok"], rows
        for r in picked:
            want = Path(r["target"]).read_text().strip() if Path(r["target"]).exists() else None
            res = self._call(runner, _ops.run_cmd, [*w, "cat", r["path"]], timeout=120)
            got = res["stdout"].strip()
            good = want is not None and res["ok"] and got == want
            ok &= good
            rows[r["path"]] = {"fake": want, "read_under_interceptor": got, "ok": good,
                               "stderr": res["stderr"].strip()[-200:]}
        return ok, rows

    def _revert(self, runner, state: dict[str, Any]) -> dict[str, Any]:
        if self.plan and state["wrapper"] in self.plan.wrappers:
            self.plan.wrappers.remove(state["wrapper"])
        shutil.rmtree(state["dir"], ignore_errors=True)
        return {"ok": not Path(state["dir"]).exists()}
