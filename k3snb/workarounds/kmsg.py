"""W1: fake ``/dev/kmsg`` — bind ``/dev/null`` over it (kind / k3s rootless approach).

gVisor has no ``/dev/kmsg``; a ``mknod`` succeeds but opening gives ENXIO, while a bind of
``/dev/null`` works with CAP_SYS_ADMIN (gvisor-matrix §1). The kubelet OOM watcher then reads EOF.
"""

from __future__ import annotations

from typing import Any

from . import _ops
from ._base import LaunchPlan, Workaround


class FakeKmsg(Workaround):
    id = "kmsg"
    params = {"path": "/dev/kmsg", "source": "/dev/null"}

    def _apply(self, runner, plan: LaunchPlan) -> dict[str, Any]:
        res = self._call(runner, _ops.kmsg_apply, self.options["path"], self.options["source"])
        if not res["ok"]:
            raise self._fail(f"bind {self.options['source']} over {self.options['path']} failed: {res['error']}",
                             res, hint="the runner needs CAP_SYS_ADMIN (GVisor(caps=...) / Host runner as root)")
        return res

    def _check(self, runner) -> tuple[bool, dict[str, Any]]:
        res = self._call(runner, _ops.kmsg_check, self.options["path"])
        return bool(res["ok"] and res["bind_mounted"]), res

    def _revert(self, runner, state: dict[str, Any]) -> dict[str, Any]:
        return self._call(runner, _ops.umount_and_remove, self.options["path"], state.get("mounted", False),
                          state.get("created", False))
