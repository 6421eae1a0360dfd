"""KubeletInUserNamespace inside a user namespace (anchors A.3, D.3; k3s rootless / usernetes).

The feature gate alone changes nothing in a plain gVisor container: its root user namespace shows
the identity map, so the kubelet does not consider itself in a user namespace. This workaround
contributes the gate *and* wraps the k3s command in a nested user namespace with a non-identity map
(``k3snb.workarounds._userns``), so the kubelet ignores the sysctl and /dev/kmsg errors.
"""

from __future__ import annotations

from typing import Any

from . import _ops
from ._base import LaunchPlan, Workaround

GATE = "--kubelet-arg=feature-gates=KubeletInUserNamespace=true"


class KubeletInUserNamespace(Workaround):
    id = "kubelet-in-userns"
    params = {"map": "0 0 65536", "mount_ns": True}

    def wrapper(self, python: str) -> list[str]:
        w = [python, "-m", "k3snb.workarounds._userns", "--map", self.options["map"]]
        if self.options["mount_ns"]:
            w.append("--mount")
        return [*w, "--"]

    def flags(self) -> list[str]:
        return [GATE]

    def _apply(self, runner, plan: LaunchPlan) -> dict[str, Any]:
        w = self.wrapper(runner.python)
        plan.wrappers.append(w)
        return {"wrapper": w}

    def _check(self, runner) -> tuple[bool, dict[str, Any]]:
        res = self._call(runner, _ops.run_cmd, [*self.wrapper(runner.python), "cat", "/proc/self/uid_map"])
        fields = res["stdout"].split()
        identity = fields == ["0", "0", "4294967295"]
        in_plan = self.plan is not None and self.flags()[0] in self.plan.flags
        detail = {"uid_map": res["stdout"].strip(), "stderr": res["stderr"].strip()[-300:], "gate_in_plan": in_plan,
                  "returncode": res["returncode"]}
        return bool(res["ok"] and fields and not identity and in_plan), detail

    def _revert(self, runner, state: dict[str, Any]) -> dict[str, Any]:
        if self.plan and state["wrapper"] in self.plan.wrappers:
            self.plan.wrappers.remove(state["wrapper"])
        return {"ok": True}
