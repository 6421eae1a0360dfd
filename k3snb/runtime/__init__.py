"""Container-runtime drivers for experiments: ``run_bundle`` (runc on a busybox OCI bundle) and
``Containerd`` (containerd with a minimal config, started inside a runner).

These test the runtime boundary below k3s without k3s (seed-catalog §8: W34 minimal OCI spec,
W35 no cgroup namespace, W32 NoNewKeyring, W33 pinned sandbox image, W43 image import).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._state import new_id
from ..errors import K3snbError, MissingDependency
from ..report import Rich, render
from ..workarounds import _ops

if TYPE_CHECKING:
    from ..runners.base import Runner, RunResult

__all__ = ["run_bundle", "write_bundle", "RuntimeResult", "Containerd", "containerd_config"]


def _need(prog: str, pkg: str) -> str:
    p = shutil.which(prog, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if not p:
        raise MissingDependency(f"{prog} not found", hint=f"apt-get install {pkg}")
    return p


def write_bundle(dest: str | os.PathLike, args: list[str], *, cgroup_ns: bool = False, network_ns: bool = False,
                 caps: list[str] | None = None) -> Path:
    """A minimal OCI bundle (W34): busybox-static rootfs, pid/ipc/uts/mount namespaces, no caps by default."""
    bb = _need("busybox", "busybox-static")
    d = Path(dest)
    rootfs = d / "rootfs"
    for sub in ("bin", "proc", "dev", "tmp", "sys", "etc"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(bb), rootfs / "bin" / "busybox")
    for name in ("sh", "echo", "cat", "ls", "id", "uname"):
        link = rootfs / "bin" / name
        if not link.exists():
            os.symlink("busybox", link)
    ns = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if cgroup_ns:
        ns.append({"type": "cgroup"})
    if network_ns:
        ns.append({"type": "network"})
    caps = caps or []
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": list(args), "cwd": "/",
            "env": ["PATH=/bin", "HOME=/"],
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted", "inheritable", "ambient")},
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "k3snb-runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
        ],
        "linux": {"namespaces": ns, "maskedPaths": [], "readonlyPaths": []},
    }
    import json

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

    def to_frame(self):
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
    runc_path = _need(runc, "runc")
    cid = new_id("k3snb-runc-")
    base = Path(runner.workdir) / cid
    bundle = write_bundle(base / "bundle", list(args), cgroup_ns=cgroup_ns)
    state = f"/run/{cid}" if runner.kind == "gvisor" else str(base / "state")
    argv = [runc_path, f"--root={state}", *(extra_global or []), "run", "--bundle", str(bundle), cid]
    t0 = time.monotonic()
    try:
        res = runner.run(argv, timeout=timeout)
    finally:
        runner.run([runc_path, f"--root={state}", "delete", "--force", cid], timeout=30)
        runner.run_python(_ops.umount_under, [str(base)], timeout=60)
        runner.run_python(_ops.cleanup_dir, state, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
    return RuntimeResult("runc", runner.kind, res.returncode, res.stdout, res.stderr, time.monotonic() - t0,
                         {"args": list(args), "cgroup_ns": cgroup_ns, "runc": runc_path})


def containerd_config(base: str, *, snapshotter: str = "native", sandbox_image: str = "rancher/mirrored-pause:3.6",
                      no_new_keyring: bool = True) -> str:
    """containerd 1.6 config (version 2) with everything under ``base``; W32/W33 options on."""
    return f"""version = 2
root = "{base}/root"
state = "{base}/state"

[grpc]
  address = "{base}/containerd.sock"

[debug]
  level = "info"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  disable_cgroup = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        NoNewKeyring = {str(no_new_keyring).lower()}
"""


class Containerd(Rich):
    """containerd started inside a runner with a minimal config; ``with Containerd(runner) as c:``."""

    _title_text = "containerd"

    def __init__(self, runner: Runner, *, snapshotter: str = "native", timeout: float = 30.0) -> None:
        self.runner = runner
        self.binary = _need("containerd", "containerd")
        self.ctr_binary = _need("ctr", "containerd")
        self.id = new_id("k3snb-ctd-")
        # gVisor: state and socket on the sandbox's private /tmp tmpfs (unix sockets on the 9p workdir
        # are not reliable); Host: in the runner's workdir, removed with it.
        self.base = f"/tmp/{self.id}" if runner.kind == "gvisor" else str(Path(runner.workdir) / self.id)
        self.conf_dir = Path(runner.workdir) / f"{self.id}-conf"
        self.snapshotter = snapshotter
        self.timeout = timeout
        self.proc = None
        self.log_path = self.conf_dir / "containerd.log"
        self.startup_s: float | None = None

    @property
    def address(self) -> str:
        return f"{self.base}/containerd.sock"

    def start(self) -> Containerd:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.conf_dir / "config.toml"
        cfg.write_text(containerd_config(self.base, snapshotter=self.snapshotter))
        self.runner.run(["mkdir", "-p", self.base], check=True)
        t0 = time.monotonic()
        self.proc = self.runner.spawn([self.binary, "--config", str(cfg)], stdout=self.log_path, stderr=self.log_path)
        deadline = t0 + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise K3snbError(f"containerd exited {self.proc.poll()}: {self.logs(15)}",
                                 hint="see Containerd.logs()")
            if self.ctr("version", timeout=10).ok:
                self.startup_s = round(time.monotonic() - t0, 3)
                return self
            time.sleep(0.3)
        raise K3snbError(f"containerd socket not up after {self.timeout}s: {self.logs(15)}", hint="see logs()")

    def ctr(self, *args: str, namespace: str = "k8s.io", timeout: float = 60.0) -> RunResult:
        return self.runner.run([self.ctr_binary, "--address", self.address, "--namespace", namespace, *args],
                               timeout=timeout)

    def plugins(self):
        """``ctr plugins ls`` as a DataFrame (type, id, platforms, status)."""
        import pandas as pd

        res = self.ctr("plugins", "ls")
        rows = []
        for line in res.stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3:
                rows.append({"type": parts[0], "id": parts[1], "platforms": " ".join(parts[2:-1]), "status": parts[-1]})
        return pd.DataFrame(rows, columns=["type", "id", "platforms", "status"])

    def import_image(self, tar: str) -> RunResult:
        """W43: import an image tarball into the ``k8s.io`` namespace."""
        return self.ctr("images", "import", tar)

    def logs(self, tail: int = 50) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate(10)
        if getattr(self.runner, "alive", lambda: True)():
            self.runner.run_python(_ops.kill_matching, [self.base, str(self.conf_dir)], [], timeout=60)
            self.runner.run_python(_ops.umount_under, [self.base], timeout=60)
            self.runner.run_python(_ops.cleanup_dir, self.base, timeout=60)
        self._final_log = self.logs(200)
        shutil.rmtree(self.conf_dir, ignore_errors=True)
        self.proc = None

    def __enter__(self) -> Containerd:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def summary(self) -> dict[str, Any]:
        return {"runner": self.runner.kind, "alive": self.alive(), "address": self.address,
                "startup_s": self.startup_s, "snapshotter": self.snapshotter}

    def to_frame(self):
        return self.plugins() if self.alive() else __import__("pandas").DataFrame()
