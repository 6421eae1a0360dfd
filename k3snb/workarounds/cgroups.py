"""cgroup v1 layouts in the runner (W16 family).

``cgroupfs``: tmpfs on ``/sys/fs/cgroup`` plus one real v1 ``cgroup`` mount per controller (the
gvisor-matrix recipe; cpu, cpuacct, cpuset, memory, pids mount inside gVisor with caps).
``fake-tmpfs``: Exp 11 — tmpfs-backed static files bind-mounted per controller (mechanically works,
but runc rejects them: not cgroupfs magic, S21). Controllers that share a hierarchy on the kernel
(e.g. ``cpu,cpuacct`` on a hybrid host) are mounted together, with per-name symlinks.
"""

from __future__ import annotations

from typing import Any

from . import _ops
from ._base import LaunchPlan, Workaround

LAYOUTS = ("cgroupfs", "fake-tmpfs")


class CgroupV1(Workaround):
    id = "cgroup-v1"
    params = {"root": "/sys/fs/cgroup", "controllers": ("cpu", "cpuacct", "cpuset", "memory", "pids"),
              "layout": "cgroupfs", "best_effort": False}

    def _apply(self, runner, plan: LaunchPlan) -> dict[str, Any]:
        if self.options["layout"] not in LAYOUTS:
            from ..errors import InvalidParameter

            raise InvalidParameter(f"unknown cgroup layout {self.options['layout']!r}; valid: {', '.join(LAYOUTS)}")
        ctl = list(self.options["controllers"])
        res = self._call(runner, _ops.cgroup_apply, self.options["root"], ctl, self.options["layout"])
        # which controllers got a hierarchy (a mounted group counts for each of its controllers)
        refused = {c for g in res.get("errors", {}) for c in g.split(",")}
        res["controllers_mounted"] = [c for c in ctl if c not in refused] if res.get("mounted") else []
        if self.options["best_effort"] and res.get("mounted") and res["controllers_mounted"]:
            res["ok"] = True  # best effort: report what refused (res["errors"]) instead of failing
        if not res["ok"]:
            if res.get("mounted"):
                self._call(runner, _ops.umount_all, res["mounted"])
            raise self._fail(f"cgroup v1 layout failed: {res.get('errors') or res.get('error')}", res,
                             hint="needs CAP_SYS_ADMIN; gVisor supports only cpu,cpuacct,cpuset,memory,pids")
        return res

    def _check(self, runner) -> tuple[bool, dict[str, Any]]:
        res = self._call(runner, _ops.cgroup_check, self.options["root"], list(self.options["controllers"]))
        rows = res["controllers"]
        # the host may already have cgroupfs there: ours must be the mount on top of the root
        ours = self.state is not None and res["root_mount_id"] == self.state.get("root_mount_id")
        res["ours_on_top"] = ours
        if self.options["best_effort"] and self.state is not None:
            rows = {c: r for c, r in rows.items() if c in self.state.get("controllers_mounted", [])}
        if self.options["layout"] == "cgroupfs":
            ok = all(r["cgroupfs"] for r in rows.values())
        else:
            ok = all(r["files"] for r in rows.values())
        return ok and ours, res

    def _revert(self, runner, state: dict[str, Any]) -> dict[str, Any]:
        res = self._call(runner, _ops.umount_all, state["mounted"])
        if state.get("made_root"):
            self._call(runner, _ops.umount_and_remove, self.options["root"], False, True, rmdir=True)
        return res
