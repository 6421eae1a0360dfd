"""W19: make ``iptables`` resolve to iptables-legacy *inside the runner*.

The research replaced ``/usr/sbin/iptables`` on the machine (``mv`` + ``ln -s``, or
``update-alternatives``). Here the change never leaves the runner: ``mode="path"`` puts a shim
directory first on k3s's PATH (symlinks named ``iptables`` etc. to the legacy multi-call binary,
which dispatches on argv[0]); ``mode="bind"`` bind-mounts the legacy binary over the resolved
``iptables`` inside the runner's mount namespace. nftables is unsupported in gVisor; legacy works
there only with ``--net-raw`` (gvisor-matrix §1).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from . import _ops
from ._base import LaunchPlan, Workaround

NAMES = {
    "iptables": "iptables-legacy",
    "iptables-save": "iptables-legacy-save",
    "iptables-restore": "iptables-legacy-restore",
    "ip6tables": "ip6tables-legacy",
    "ip6tables-save": "ip6tables-legacy-save",
    "ip6tables-restore": "ip6tables-legacy-restore",
}
MODES = ("path", "bind")


def _which(name: str) -> str | None:
    return shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


class IptablesLegacy(Workaround):
    id = "iptables-legacy"
    params = {"mode": "path", "probe_table": "nat"}

    def _apply(self, runner, plan: LaunchPlan) -> dict[str, Any]:
        mode = self.options["mode"]
        if mode not in MODES:
            from ..errors import InvalidParameter

            raise InvalidParameter(f"unknown iptables-legacy mode {mode!r}; valid: {', '.join(MODES)}")
        legacy = {n: _which(t) for n, t in NAMES.items()}
        if not legacy["iptables"]:
            raise self._fail("iptables-legacy is not installed", {}, hint="apt-get install iptables")
        if mode == "path":
            shim = Path(plan.work_dir) / "iptables-legacy-bin"
            shim.mkdir(parents=True, exist_ok=True)
            for name, target in legacy.items():
                if target:
                    link = shim / name
                    if link.is_symlink() or link.exists():
                        link.unlink()
                    # the multi-call binary dispatches on argv[0], so point at its real file
                    os.symlink(os.path.realpath(target), link)
            plan.path_prepend.insert(0, str(shim))
            return {"mode": mode, "shim": str(shim)}
        target = os.path.realpath(_which("iptables") or "/usr/sbin/iptables")
        res = self._call(runner, _ops.bind_file, os.path.realpath(legacy["iptables"]), target)
        if not res["ok"]:
            raise self._fail(f"bind over {target} failed: {res['error']}", res, hint="needs CAP_SYS_ADMIN")
        return {"mode": mode, "target": target, "mounted": True}

    def _env(self) -> dict[str, str]:
        env = {}
        if self.plan is not None:
            env = self.plan.environment()
        return env

    def _check(self, runner) -> tuple[bool, dict[str, Any]]:
        env = self._env()
        ver = self._call(runner, _ops.run_cmd, ["iptables", "--version"], env)
        table = self._call(runner, _ops.run_cmd, ["iptables", "-t", self.options["probe_table"], "-S"], env)
        detail = {
            "version": (ver["stdout"] or ver["stderr"]).strip(),
            "table_access": table["ok"],
            "table_output": (table["stdout"] or table["stderr"]).strip()[:300],
        }
        return "legacy" in detail["version"], detail

    def _revert(self, runner, state: dict[str, Any]) -> dict[str, Any]:
        if state["mode"] == "path":
            shutil.rmtree(state["shim"], ignore_errors=True)
            if self.plan and state["shim"] in self.plan.path_prepend:
                self.plan.path_prepend.remove(state["shim"])
            return {"ok": True}
        return self._call(runner, _ops.umount_and_remove, state["target"], True, False)
