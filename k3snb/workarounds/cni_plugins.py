"""CNI workarounds: W10 fake ``host-local`` (Exp 05) and W4 copies of the real CNI plugins.

k3s looks ``host-local`` up on PATH at start (``exec.LookPath``), so a program of that name on the
k3s PATH unblocks ``--disable-agent`` (S10/S11). The fake plugin is k3snb.cni's spec-conformant one.
W4 copies (never symlinks) ``/usr/lib/cni/*`` into a directory on the k3s PATH.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from . import _ops
from ._base import LaunchPlan, Workaround


class FakeCni(Workaround):
    id = "fake-cni"
    params = {"aliases": ("host-local",), "subnet": "10.42.0.0/24"}

    def _apply(self, runner, plan: LaunchPlan) -> dict[str, Any]:
        from ..cni import install_cni

        base = Path(plan.work_dir) / "fake-cni"
        inst = install_cni(base / "bin", base / "net.d", aliases=tuple(self.options["aliases"]),
                           subnet=self.options["subnet"], python=runner.python)
        plan.path_prepend.append(str(inst.bin_dir))
        return {"dir": str(base), "bin_dir": str(inst.bin_dir), "conflist": str(inst.conflist),
                "programs": [str(p) for p in inst.programs]}

    def _check(self, runner) -> tuple[bool, dict[str, Any]]:
        if not self.state:
            return False, {"note": "not applied"}
        env = {"PATH": f"{self.state['bin_dir']}:/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "VERSION"}
        rows = {}
        for alias in self.options["aliases"]:
            res = self._call(runner, _ops.run_cmd, ["sh", "-c", f'command -v {alias} && exec {alias} </dev/null'], env)
            rows[alias] = {"found": res["stdout"].splitlines()[:1], "rc": res["returncode"],
                           "reply": "\n".join(res["stdout"].splitlines()[1:])[:200]}
        ok = all(r["rc"] == 0 and "cniVersion" in r["reply"] for r in rows.values())
        return ok, rows

    def _revert(self, runner, state: dict[str, Any]) -> dict[str, Any]:
        shutil.rmtree(state["dir"], ignore_errors=True)
        if self.plan and state["bin_dir"] in self.plan.path_prepend:
            self.plan.path_prepend.remove(state["bin_dir"])
        return {"ok": True}


class CniPlugins(Workaround):
    id = "cni-plugins"
    params = {"source": "/usr/lib/cni"}

    def _apply(self, runner, plan: LaunchPlan) -> dict[str, Any]:
        src = Path(self.options["source"])
        if not src.is_dir():
            raise self._fail(f"{src} not found", {}, hint="apt-get install containernetworking-plugins")
        dst = Path(plan.work_dir) / "cni-bin"
        dst.mkdir(parents=True, exist_ok=True)
        copied = []
        for f in sorted(src.iterdir()):
            if f.is_file():
                shutil.copy2(f.resolve(), dst / f.name)  # copy, don't symlink (W4)
                copied.append(f.name)
        plan.path_prepend.append(str(dst))
        return {"dir": str(dst), "copied": copied}

    def _check(self, runner) -> tuple[bool, dict[str, Any]]:
        if not self.state:
            return False, {"note": "not applied"}
        res = self._call(runner, _ops.run_cmd, [f"{self.state['dir']}/host-local"], {"CNI_COMMAND": "VERSION"})
        return res["ok"] and "cniVersion" in res["stdout"], {"reply": res["stdout"][:200], "rc": res["returncode"]}

    def _revert(self, runner, state: dict[str, Any]) -> dict[str, Any]:
        shutil.rmtree(state["dir"], ignore_errors=True)
        if self.plan and state["dir"] in self.plan.path_prepend:
            self.plan.path_prepend.remove(state["dir"])
        return {"ok": True}
