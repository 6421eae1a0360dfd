"""Mount workarounds: shared propagation (W2), tmpfs data dir and fake diskstats (W7).

All act in the runner's own mount namespace. gVisor refuses ``MS_REC|MS_SHARED`` on ``/`` (EINVAL)
but accepts ``MS_SHARED`` on a submount, so propagation falls back to a shared self-bind of the
k3s data dir (gvisor-matrix §1). ``/proc/diskstats`` does not exist in gVisor, so the bind variant
fails there with the research's own finding (W18: a bind needs an existing target).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import _ops
from ._base import LaunchPlan, Workaround


class SharedPropagation(Workaround):
    id = "propagation"
    params = {"path": "/", "fallback": "data-dir"}

    def _fallback(self, plan: LaunchPlan) -> str | None:
        fb = self.options["fallback"]
        return plan.data_dir if fb == "data-dir" else fb

    def _apply(self, runner, plan: LaunchPlan) -> dict[str, Any]:
        res = self._call(runner, _ops.propagation_apply, self.options["path"], self._fallback(plan))
        if not res["ok"]:
            raise self._fail(f"could not make {self.options['path']} (or the data dir) shared: {res['error']}", res,
                             hint="needs CAP_SYS_ADMIN in the runner")
        return res

    def _check(self, runner) -> tuple[bool, dict[str, Any]]:
        target = (self.state or {}).get("target") or self.options["path"]
        props = self._call(runner, _ops.propagation_of, target)
        top = props.get(os.path.realpath(target), "")
        return "shared:" in top, {"target": target, "propagation": top, "mounts_below": len(props)}

    def _revert(self, runner, state: dict[str, Any]) -> dict[str, Any]:
        return self._call(runner, _ops.propagation_revert, state)


class TmpfsDataDir(Workaround):
    id = "tmpfs-data-dir"
    params = {"path": None, "size": "4g", "shared": True}

    def _path(self, plan: LaunchPlan | None) -> str:
        return self.options["path"] or (plan.data_dir if plan else "")

    def _apply(self, runner, plan: LaunchPlan) -> dict[str, Any]:
        path = self._path(plan)
        res = self._call(runner, _ops.tmpfs_apply, path, self.options["size"], self.options["shared"])
        if not res["ok"]:
            raise self._fail(f"tmpfs mount on {path} failed: {res['error']}", res, hint="needs CAP_SYS_ADMIN")
        return res | {"path": path}

    def _check(self, runner) -> tuple[bool, dict[str, Any]]:
        path = (self.state or {}).get("path") or self._path(self.plan)
        res = self._call(runner, _ops.fs_check, path, _ops.TMPFS_MAGIC)
        return res["ok"], res | {"path": path}

    def _revert(self, runner, state: dict[str, Any]) -> dict[str, Any]:
        return self._call(runner, _ops.umount_and_remove, state["path"], True, state.get("made_dir", False), rmdir=True)


DISKSTATS = (  # baseline tools/start-k3s.sh: three zeroed lines
    "   8       0 sda 0 0 0 0 0 0 0 0 0 0 0\n"
    "   8       1 sda1 0 0 0 0 0 0 0 0 0 0 0\n"
    " 253       0 dm-0 0 0 0 0 0 0 0 0 0 0 0\n"
)


class FakeDiskstats(Workaround):
    id = "fake-diskstats"
    params = {"target": "/proc/diskstats", "content": DISKSTATS}

    def _apply(self, runner, plan: LaunchPlan) -> dict[str, Any]:
        src = Path(plan.work_dir) / "fake-diskstats"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(self.options["content"])
        res = self._call(runner, _ops.bind_file, str(src), self.options["target"])
        if not res["ok"]:
            src.unlink(missing_ok=True)
            raise self._fail(f"bind over {self.options['target']} failed: {res['error']}", res,
                             hint="in gVisor /proc/diskstats is absent: redirect it with the fake-procsys interceptor")
        return res | {"source": str(src)}

    def _check(self, runner) -> tuple[bool, dict[str, Any]]:
        res = self._call(runner, _ops.read_text, self.options["target"])
        ok = bool(res.get("ok") and res.get("mountpoint") and res["text"] == self.options["content"])
        return ok, res

    def _revert(self, runner, state: dict[str, Any]) -> dict[str, Any]:
        res = self._call(runner, _ops.umount_and_remove, self.options["target"], True, False)
        Path(state["source"]).unlink(missing_ok=True)
        return res
