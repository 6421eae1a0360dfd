"""Container runtimes driven inside a runner: ``run_container`` / ``run_direct`` (one container start as a
stage record, :class:`Attempt`), ``Containerd`` (a supervised containerd with a minimal config) and
``run_bundle`` (runc on a busybox OCI bundle).

These test the runtime boundary below k3s without k3s (seed-catalog §8: W34 minimal OCI spec,
W35 no cgroup namespace, W32 NoNewKeyring, W33 pinned sandbox image, W43 image import).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._paths import need_program
from .._state import new_id
from ..report import Rich, render
from ..workarounds import _ops

if TYPE_CHECKING:
    import pandas as pd

    from ..runners.base import Runner

__all__ = ["oci_config", "run_bundle", "write_bundle", "RuntimeResult", "Containerd", "containerd_config", "Attempt", "STAGES",
           "run_container", "run_direct", "RUNTIMES", "SNAPSHOTTERS", "runtime_binary"]


def oci_config(args: list[str], *, env: list[str] | None = None, cwd: str = "/", cgroup_ns: bool = False,
               network_ns: bool = False, caps: list[str] | None = None, cgroups_path: str | None = None,
               readonly: bool = True) -> dict[str, Any]:
    """A minimal OCI runtime config (W34): pid/ipc/uts/mount namespaces, no caps by default."""
    ns = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if cgroup_ns:
        ns.append({"type": "cgroup"})
    if network_ns:
        ns.append({"type": "network"})
    caps = caps or []
    linux: dict[str, Any] = {"namespaces": ns, "maskedPaths": [], "readonlyPaths": []}
    if cgroups_path:
        linux["cgroupsPath"] = cgroups_path
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": list(args), "cwd": cwd or "/",
            "env": list(env or ["PATH=/bin", "HOME=/"]),
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted", "inheritable", "ambient")},
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": readonly},
        "hostname": "k3snb-runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
        ],
        "linux": linux,
    }


def write_bundle(dest: str | os.PathLike, args: list[str], *, cgroup_ns: bool = False, network_ns: bool = False,
                 caps: list[str] | None = None) -> Path:
    """A minimal OCI bundle (W34): busybox-static rootfs, pid/ipc/uts/mount namespaces, no caps by default."""
    bb = need_program("busybox", "busybox-static")
    d = Path(dest)
    rootfs = d / "rootfs"
    for sub in ("bin", "proc", "dev", "tmp", "sys", "etc"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(bb), rootfs / "bin" / "busybox")
    for name in ("sh", "echo", "cat", "ls", "id", "uname"):
        link = rootfs / "bin" / name
        if not link.exists():
            os.symlink("busybox", link)
    import json

    config = oci_config(args, cgroup_ns=cgroup_ns, network_ns=network_ns, caps=caps)
    (d / "config.json").write_text(json.dumps(config, indent=1))
    return d


@dataclass(repr=False)
class RuntimeResult(Rich):
    """One ``runc run`` of a bundle: exit code, output, and blocker signatures in the error text."""

    runtime: str
    runner: str
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    bundle: dict[str, Any] = field(default_factory=dict)
    _title_text = "OCI runtime run"

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def signatures(self) -> list[str]:
        """Signature ids (k3snb.signatures) found in stderr; empty when the classifier is absent."""
        try:
            from ..signatures import classify
        except ImportError:
            return []
        df = classify(self.stderr + "\n" + self.stdout).to_frame()
        return sorted(df["id"].astype(str).unique()) if "id" in df else []

    def summary(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "runner": self.runner, "ok": self.ok, "returncode": self.returncode,
                "duration_s": round(self.duration, 3)}

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([{**self.summary(), "stdout": self.stdout.strip()[:200],
                              "stderr": self.stderr.strip()[-300:]}])

    def _repr_html_(self) -> str:
        return render(f"{self.runtime} run in {self.runner}", self.summary(),
                      [("stdout", self.stdout or "(empty)"), ("stderr", self.stderr or "(empty)"),
                       ("bundle", self.bundle)], text=self._repr_text())


def run_bundle(runner: Runner, args: tuple[str, ...] | list[str] = ("echo", "hello-from-runc"), *,
               runc: str = "runc", cgroup_ns: bool = False, timeout: float = 60.0,
               extra_global: list[str] | None = None) -> RuntimeResult:
    """Write a busybox bundle in the runner's workdir and ``runc run`` it inside the runner."""
    runc_path = need_program(runc, "runc")
    cid = new_id("k3snb-runc-")
    base = Path(runner.workdir) / cid
    state = f"/run/{cid}"  # tmpfs in both runners; removed below
    t0 = time.monotonic()
    try:
        bundle = write_bundle(base / "bundle", list(args), cgroup_ns=cgroup_ns)
        argv = [runc_path, f"--root={state}", *(extra_global or []), "run", "--bundle", str(bundle), cid]
        t0 = time.monotonic()
        res = runner.run(argv, timeout=timeout)
    finally:
        # each step on its own, errors swallowed: cleanup must neither stop halfway nor hide the real error
        with contextlib.suppress(Exception):
            runner.run([runc_path, f"--root={state}", "delete", "--force", cid], timeout=30)
        with contextlib.suppress(Exception):
            runner.run_python(_ops.umount_under, [str(base)], timeout=60)
        with contextlib.suppress(Exception):
            runner.run_python(_ops.cleanup_dir, state, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
    return RuntimeResult("runc", _runner_name(runner), res.returncode, res.stdout, res.stderr, time.monotonic() - t0,
                         {"args": list(args), "cgroup_ns": cgroup_ns, "runc": runc_path})


from .containerd import (  # noqa: E402
    RUNTIMES,
    SNAPSHOTTERS,
    Containerd,
    _runner_name,  # noqa: E402
    containerd_config,
    runtime_binary,
)
from .run import run_container, run_direct  # noqa: E402
from .stages import STAGES, Attempt  # noqa: E402
