"""``Host``: run commands on the host kernel inside private mount + uts (+ pid) namespaces.

A holder process (``unshare --mount --uts --pid --fork --kill-child``) keeps the namespaces alive;
every ``run()`` enters them with ``nsenter``, so a tmpfs mounted by one command is seen by the next,
yet nothing reaches the host mount table. The holder's child is the pid-namespace init: killing it
on ``close()`` ends everything started inside, and the mount namespace vanishes with it.
Without root, a user namespace (``unshare -r``) stands in where the kernel allows it.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._procfs import children
from .._state import Record, make_tempdir, new_id
from .._system import root_fstype
from ..errors import MissingDependency, NotRoot, SandboxError
from .base import BackgroundProcess, Capabilities, Cmd, Runner, RunResult, _argv, _open_logs, _Pipes

READY = "k3snb-host-ready"
# pid-namespace init: announce readiness, then reap orphans (dash's `wait` collects any child)
INIT_SCRIPT = f"echo {READY}; while :; do sleep 3600 & wait; done"


def _in_mount_ns(pid: int) -> list[int]:
    """Pids sharing ``pid``'s mount namespace (identity: the namespace inode, private to this runner)."""
    try:
        ns = os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return []
    if ns == os.readlink("/proc/self/ns/mnt"):
        return []  # never the host's namespace
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{d}/ns/mnt") == ns:
                    out.append(int(d))
    return out



class HostProcess(BackgroundProcess):
    """A background process inside the Host runner's namespaces (see :meth:`Host.spawn`)."""

    def _signal_group(self, sig: signal.Signals) -> None:
        # the nsenter client leads its own session; the command (forked by nsenter) is in it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.client.pid, sig)


class Host(Runner):
    """Private mount + uts (+ pid) namespaces on the host kernel.

    Args:
        pid: also a private pid namespace (default True); its init dies on close, and with it
            everything started inside.
        userns: None = user namespace only when not root; True/False to force.
        timeout: default per-command timeout in seconds.

    Example:
        >>> with Host() as h:
        ...     h.run("mount -t tmpfs none /mnt && grep -c ' /mnt ' /proc/self/mountinfo").stdout
        '1\\n'
    """

    kind = "host"
    OPTIONS = ("pid", "userns", "timeout", "hostname")
    # the GVisor runner's options: accepted so one spec + options fits both runners, kept in
    # ``ignored_options`` (and info()) instead of raising
    IGNORES = frozenset({"runsc", "caps", "cgroupfs", "net_raw", "platform", "network", "binds", "debug",
                         "runsc_flags", "start_retries", "start_timeout", "env"})

    def __init__(self, *, pid: bool = True, userns: bool | None = None, timeout: float = 600.0,
                 hostname: str | None = None, **other: Any) -> None:
        self._take_ignored(other)
        for prog in ("unshare", "nsenter"):
            if shutil.which(prog) is None:
                raise MissingDependency(f"{prog} not found", hint="apt-get install util-linux")
        self.pid_ns = pid
        self.userns = (os.geteuid() != 0) if userns is None else userns
        self.timeout = float(timeout)
        self.hostname = hostname
        self.id = new_id("k3snb-host-")
        self._workdir: Path | None = None
        self._holder: subprocess.Popen | None = None
        self._init_pid: int | None = None
        self._record: Record | None = None
        self._spawned: list[HostProcess] = []
        self._closed = False

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise SandboxError("the Host runner is not started", hint="use `with Host() as h:` or call .start()")
        return self._workdir

    def start(self) -> Host:
        if self._holder is not None:
            return self
        if self._closed:
            raise SandboxError("this Host runner was closed", hint="create a new Host()")
        try:
            self._workdir = make_tempdir("host")
            self._record = Record(kind="host", id=self.id, paths=[str(self._workdir)]).save()
            argv = ["unshare", "--mount", "--uts", "--propagation", "private"]
            if self.userns:
                argv += ["--user", "--map-root-user"]
            if self.pid_ns:
                argv += ["--pid", "--fork", "--kill-child", "--mount-proc"]
            # without a pid namespace the holder must not have children of its own to orphan
            argv += ["/bin/sh", "-c", INIT_SCRIPT if self.pid_ns else f"echo {READY}; exec sleep infinity"]
            self._holder = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, start_new_session=True)
            self._record.add_pid(self._holder.pid).save()
            if not self._wait_ready(10.0):
                err = ""
                if self._holder.poll() is not None:
                    err = self._holder.stderr.read().decode(errors="replace")
                if os.geteuid() != 0:
                    raise NotRoot(f"cannot create private namespaces without root: {err.strip()}",
                                  hint="run as root, or enable unprivileged user namespaces "
                                  "(sysctl kernel.unprivileged_userns_clone=1)")
                raise SandboxError(f"unshare failed: {err.strip()}", hint="check that unshare(1) works here")
            # the process that holds the namespaces: unshare's forked child (pid-ns init) or unshare itself
            kids = children(self._holder.pid) if self.pid_ns else []
            self._init_pid = kids[0] if kids else self._holder.pid
            self._record.add_pid(self._init_pid).save()
            self._track_open(True)
            if self.hostname:
                self.run(["hostname", self.hostname], check=True)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self, limit: float) -> bool:
        sel = selectors.DefaultSelector()
        sel.register(self._holder.stdout, selectors.EVENT_READ)
        deadline, buf = time.monotonic() + limit, b""
        try:
            while time.monotonic() < deadline:
                if sel.select(timeout=0.2):
                    chunk = os.read(self._holder.stdout.fileno(), 4096)
                    if not chunk:
                        return False
                    buf += chunk
                    if READY.encode() in buf:
                        return True
                elif self._holder.poll() is not None:
                    return False
        finally:
            sel.close()
        return False

    def alive(self) -> bool:
        return self._holder is not None and self._holder.poll() is None

    def close(self) -> None:
        """Kill the namespace holder (and so everything inside), remove the workdir. Idempotent."""
        self._closed = True
        self._track_open(False)
        holder, self._holder = self._holder, None
        try:
            for sp in self._spawned:
                if sp.poll() is None:
                    sp.kill()
            self._spawned.clear()
            if holder is not None:
                if not self.pid_ns:
                    # no pid-ns init to take everything down: end what lives in our mount namespace
                    for pid in _in_mount_ns(self._init_pid or holder.pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                for pid in (self._init_pid, holder.pid):
                    if pid:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                try:
                    holder.wait(10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(holder.pid, signal.SIGKILL)
                    holder.wait(5)
                for f in (holder.stdout, holder.stderr):
                    if f:
                        f.close()
        finally:
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                if not self._workdir.exists():
                    self._workdir = None
            if self._workdir is None and self._record is not None:
                self._record.drop()
                self._record = None

    # -- commands ----------------------------------------------------------------------------
    def _enter(self, argv: list[str], cwd: str | None) -> list[str]:
        if self._holder is None or self._init_pid is None:
            raise SandboxError("the Host runner is not running", hint="use `with Host() as h:` or call .start()")
        ns = ["--mount", "--uts"] + (["--pid"] if self.pid_ns else []) + (["--user", "--preserve-credentials"]
                                                                           if self.userns else [])
        return ["nsenter", "-t", str(self._init_pid), *ns, f"--wd={cwd or self.workdir}", "--", *argv]

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        return {**os.environ, **(env or {})}

    def run(
        self,
        cmd: Cmd,
        *,
        input: bytes | str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = False,
    ) -> RunResult:
        argv = _argv(cmd)
        full = self._enter(argv, cwd)
        limit = self.timeout if timeout is None else float(timeout)
        data = input.encode() if isinstance(input, str) else input
        t0 = time.monotonic()
        p = subprocess.Popen(full, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env(env),
                             start_new_session=True)
        pipes = _Pipes(p, data)
        try:
            timed_out = pipes.wait(t0 + limit) == "timeout"
        except BaseException:  # KeyboardInterrupt: end the command, then re-raise
            timed_out = True
            raise
        finally:
            if timed_out:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)
        out, err = pipes.result()
        res = RunResult(argv, None if timed_out else p.returncode, out, err, time.monotonic() - t0, self.kind,
                        timed_out=timed_out)
        return res.check() if check else res

    def spawn(
        self,
        cmd: Cmd,
        *,
        stdout: str | os.PathLike | None = None,
        stderr: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> HostProcess:
        argv = _argv(cmd)
        full = self._enter(argv, cwd)
        n = len(self._spawned) + 1
        out_path = Path(stdout) if stdout else self.workdir / f"spawn-{n}.out"
        err_path = Path(stderr) if stderr else self.workdir / f"spawn-{n}.err"
        with _open_logs(out_path, err_path) as (fo, fe):
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, env=self._env(env),
                                 start_new_session=True)
        sp = HostProcess(argv, p, out_path, err_path)
        self._spawned.append(sp)
        return sp

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            own_kernel=False, has_real_cgroups=True, needs_net_raw=False,
            root_fstype=root_fstype() or "unknown",  # the private mount namespace starts as a copy of the host's
            private_tmp=False, private_pids=self.pid_ns, shares_host_network=True, host_network_writable=True,
        )

    def info(self) -> dict[str, Any]:
        return {**self._info_base(), "pid_ns": self.pid_ns, "userns": self.userns,
                "kernel": os.uname().release, "holder_pid": self._init_pid}

    def __repr__(self) -> str:
        return f"<Host {'running' if self.alive() else 'stopped'} pid_ns={self.pid_ns} userns={self.userns}>"
