"""``GVisor``: run commands inside a gVisor (runsc) sandbox built from a kit-written OCI bundle.

Lifecycle (measured, see docs/gvisor-stability.md and data/benchmarks/sandbox-lifecycle.json):

* ``start()`` keeps ``runsc run`` (foreground, not ``--detach``) as a child of this process. runsc
  then stays the parent of its sandbox and gofer, so on ``close()`` it reaps them at once and deletes
  the container itself. The detached recipe (``run --detach`` … ``delete --force``) spends 1.6–1.8 s in
  ``delete`` waiting for the orphaned sandbox zombie to be reaped by PID 1, which here takes seconds.
  The child also gives a free liveness check: it exits when the sandbox dies.
* ``run()`` is one ``runsc exec`` per command; exec'd processes are session leaders, so a timeout
  kills the whole process group inside the sandbox.
* A dead sandbox (2024 sentry panics) is a result: ``RunResult(sandbox_died=True, crash=...)`` with
  the panic text from the ``--panic-log``/``--debug-log`` files, which are always kept.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._paths import cache_dir, kit_python, state_dir
from .._procfs import children, pid_alive, proc_start
from .._state import Record, make_tempdir, new_id
from ..errors import InvalidParameter, MissingDependency, NotRoot, SandboxError
from . import _oci
from .base import BackgroundProcess, Capabilities, Cmd, Runner, RunResult, _argv, _open_logs, _Pipes
from .runsc import VERSIONS, find_runsc, runsc_version

READY = "k3snb-sandbox-ready"
# network='sandbox' (gvisor-matrix §3): runsc's root-netns test looks for /proc/sys/net/core/rmem_default,
# which kernel 6.x shows in every netns. So runsc runs in a private mount+net namespace whose
# /proc/sys is a tmpfs holding only vm, kernel and fs; the spec points at that netns.
NETNS_SCRIPT = """set -e
ip link set lo up
mount --bind /proc/sys "$1"
mount -t tmpfs k3snb-procsys /proc/sys
for d in vm kernel fs; do mkdir /proc/sys/$d; mount --bind "$1/$d" /proc/sys/$d; done
shift
exec "$@"
"""
# The container init says when it runs and then reaps orphans (dash's `wait` collects any child),
# so processes of timed-out or killed commands do not linger as zombies.
INIT_SCRIPT = f"echo {READY}; while :; do /bin/sleep 3600 & wait; done"
NETWORKS = ("none", "host", "sandbox")
PLATFORMS = (None, "ptrace", "systrap", "kvm")

# Flags used by default per build; an explicit ``runsc_flags`` entry for the same flag wins.
# 2024: runsc's own defaults (systrap, directfs). The stability study (docs/gvisor-stability.md)
# found 0 deaths in 1,148 sandboxes over 8 configurations (and the notes' detach recipe), so no
# flag earned a place here.
BUILD_DEFAULTS: dict[str, list[str]] = {"2022": [], "2024": []}

# Exec errors that mean the sandbox itself is gone (not the command failing).
# runsc exits 128 when it fails itself; "loading sandbox: file does not exist" is the window in
# which the runsc run parent is already deleting the dead container's state.
DEAD_PATTERNS = re.compile(
    r"containerManager\.\w+\" failed|connecting to control server|urpc method .* failed"
    r"|sandbox is not running|error getting processes for container|loading (sandbox|container)"
    # an exec that raced the sandbox's death: runsc already marked the container stopped
    r"|cannot execute in container .* in state stopped",
    re.I,
)
RUNSC_FAILED = 128
_PANIC_START = re.compile(r"^(panic: |fatal error: |Panic: |.*\bpanic\b.*goroutine|goroutine \d+ \[)")


def _gist(text: str, n: int = 6) -> str:
    """The telling lines of a runsc error output (it may append its whole usage text)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    key = [ln for ln in lines if re.search(r"(?i)error|fatal|flag provided|invalid|cannot|failed|panic|hung", ln)]
    return "\n".join((key or lines)[:n] if key else lines[-n:])[:1200]





def pids_with_root(root: str) -> list[int]:
    """Host pids of runsc processes started with ``--root=<root>`` (identity by the tagged path)."""
    needles = (f"--root={root}\0".encode(), f"--root\0{root}\0".encode())
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if any(n in cmd for n in needles):
            out.append(int(d))
    return out


def _remove_cgroups(cids: list[str], wait: float = 3.0) -> list[str]:
    """rmdir ``/sys/fs/cgroup/<ctrl>/<cid>`` (runsc's per-container cgroups; glob patterns allowed),
    retried while tasks exit; returns what is left."""
    dirs = [d for cid in cids if cid for d in Path("/sys/fs/cgroup").glob(f"*/{cid}") if d.is_dir()]
    deadline = time.monotonic() + wait
    while dirs:
        left = []
        for d in dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left.append(d)
        dirs = left
        if not dirs or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return [str(d) for d in dirs]


def extract_panic(texts: Sequence[str], max_lines: int = 60) -> str | None:
    """The panic report (``panic:`` line + goroutine stack head) out of runsc log texts."""
    for text in texts:
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if _PANIC_START.match(line.strip()) or "panic:" in line:
                return "\n".join(lines[max(0, i - 2) : i + max_lines])
    return None


class GVisorProcess(BackgroundProcess):
    """A background process inside the sandbox (see :meth:`GVisor.spawn`)."""

    def __init__(self, runner: GVisor, args: list[str], client: subprocess.Popen, pidfile: Path,
                 stdout_path: Path, stderr_path: Path) -> None:
        super().__init__(args, client, stdout_path, stderr_path)
        self.runner = runner
        self.pidfile = pidfile

    @property
    def pid(self) -> int | None:
        """The process id inside the sandbox (also its process-group id)."""
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                return int(self.pidfile.read_text().strip())
            if self.client.poll() is not None:
                return None
            time.sleep(0.01)
        return None

    def _signal_group(self, sig: signal.Signals) -> None:
        pid = self.pid
        if pid and self.runner.alive():
            self.runner._exec_quiet(["/bin/kill", f"-{sig.name[3:]}", "--", f"-{pid}"], timeout=10)


def _runsc_env() -> dict[str, str]:
    """The environment runsc itself runs with: no TMPDIR. The 2022 sandbox process drops to an
    unprivileged user and then cannot reach a TMPDIR inside a 0700 folder (pytest's tmp_path, a
    run's private kit dir): sandbox creation dies with "cannot read client sync file". Without
    TMPDIR runsc uses /tmp. Commands inside get their environment from the spec, not from here."""
    return {k: v for k, v in os.environ.items() if k != "TMPDIR"}


def _state_dirs_to_mask(base: Path) -> list[str]:
    """The kit's state dir (records name pids and paths of every run on this machine), unless the
    runner's own files or the kit live inside it."""
    sd = os.path.realpath(state_dir())
    keep = [os.path.realpath(p) for p in (base, *_kit_paths())]
    return [] if any(k == sd or k.startswith(sd + "/") or sd.startswith(k + "/") for k in keep) else [sd]


def _kit_paths() -> list[str]:
    """Host paths the kit needs inside the sandbox: its interpreter's environment, its source, its
    cache (runsc builds, k3s, images) and an explicit ``$K3SNB_K3S`` binary: bound back when they lie
    under a tmpfs or a masked secret directory (/root, /home)."""
    checkout = Path(__file__).resolve().parents[2]  # the folder holding the k3snb package
    extra = [str(cache_dir())] + [os.environ[v] for v in ("K3SNB_K3S",) if os.environ.get(v)]
    return [sys.prefix, sys.base_prefix, str(checkout), *extra]


class GVisor(Runner):
    """A gVisor sandbox: host ``/`` read-only (9p), full caps, writable workdir at the same path.

    Args:
        runsc: ``"2022"`` (system), ``"2024"`` (kit cache), a path, or None (system default).
        caps: True (all capabilities, default), False (none) or a list of names.
        cgroupfs: pass ``--cgroupfs`` (tmpfs /sys/fs/cgroup with cpu and memory controllers).
        net_raw: pass ``--net-raw`` (CAP_NET_RAW; needed for legacy iptables).
        platform: ``"ptrace"``, ``"systrap"`` (2024 only) or ``"kvm"``; None = runsc's default.
        network: ``"none"`` (default, netstack with lo), ``"host"`` (hostinet, shares the host's),
            ``"sandbox"`` (netstack on a private netns with lo; needs root, see NETNS_SCRIPT).
        binds: extra mounts, ``"SRC[:DST[:ro|rw]]"`` or ``(src, dst, readonly)``.
        debug: pass ``--debug`` (verbose logs); the log dir and panic log are kept either way.
        runsc_flags: extra global runsc flags, e.g. ``["--directfs=false"]``.
        timeout: default per-command timeout in seconds (``run(timeout=...)`` overrides).
        start_retries: how many more times ``start()`` tries when sandbox creation fails.

    Example:
        >>> with GVisor() as g:
        ...     g.run("uname -r").stdout
        '4.4.0\\n'
    """

    kind = "gvisor"
    OPTIONS = ("runsc", "caps", "cgroupfs", "net_raw", "platform", "network", "binds", "debug", "runsc_flags",
               "timeout", "start_retries", "start_timeout", "env", "hostname")
    SPEC_FIELDS = ("runsc", "platform")  # gvisor:2024:ptrace
    REQUIRES = ("root", "runsc")
    # the Host runner's namespace options: a sandbox always has its own pid namespace and user ids
    IGNORES = frozenset({"pid", "userns"})

    def __init__(
        self,
        runsc: str | os.PathLike | None = None,
        *,
        caps: bool | Sequence[str] = True,
        cgroupfs: bool = False,
        net_raw: bool = False,
        platform: str | None = None,
        network: str = "none",
        binds: Sequence[Any] = (),
        debug: bool = False,
        runsc_flags: Sequence[str] = (),
        timeout: float = 600.0,
        start_retries: int = 2,
        start_timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        hostname: str | None = None,
        **other: Any,
    ) -> None:
        self._take_ignored(other)
        if os.geteuid() != 0 and not any(f.startswith(("--rootless", "--TESTONLY-unsafe-nonroot"))
                                         for f in runsc_flags if isinstance(f, str)):
            raise NotRoot("runsc needs root to create sandboxes")
        if network not in NETWORKS:
            raise InvalidParameter(f"unknown network {network!r}; valid: {', '.join(NETWORKS)}",
                                   hint="pass network='none' (default) or network='host'")
        if network == "sandbox":
            if os.geteuid() != 0:
                raise NotRoot("network='sandbox' needs root (it mounts inside a private namespace)")
            missing = [p for p in ("unshare", "nsenter", "ip") if shutil.which(p) is None]
            if missing:
                raise MissingDependency(f"network='sandbox' needs {', '.join(missing)}",
                                        hint="apt-get install util-linux iproute2")
        if platform not in PLATFORMS:
            raise InvalidParameter(f"unknown platform {platform!r}; valid: ptrace, systrap, kvm",
                                   hint="pass platform='ptrace' (2022) or 'systrap' (2024), or leave it None")
        if isinstance(runsc_flags, str) or not all(isinstance(f, str) and f.startswith("-") for f in runsc_flags):
            raise InvalidParameter(f"runsc_flags must be a list of flags, got {runsc_flags!r}",
                                   hint="pass e.g. runsc_flags=['--directfs=false']")
        self.runsc_path = find_runsc(runsc)  # raises a UsageError for unknown names / missing paths
        self.runsc_build = str(runsc) if runsc in ("2022", "2024") else None
        if platform == "systrap" and self._build_name() == "2022":
            raise InvalidParameter("platform 'systrap' does not exist in the 2022 runsc build; valid: ptrace, kvm",
                                   hint="use platform='ptrace' with runsc 2022, or runsc='2024' for systrap")
        self.hostname = hostname
        self.caps = _oci.resolve_caps(caps)
        self.binds = _oci.parse_binds(binds)
        self.cgroupfs, self.net_raw, self.platform, self.network = cgroupfs, net_raw, platform, network
        self.debug = debug
        self.runsc_flags = list(runsc_flags)
        self.timeout = float(timeout)
        self.start_retries = int(start_retries)
        self.start_timeout = float(start_timeout)
        self.extra_env = dict(env or {})
        self.id = new_id("k3snb-")
        self._base: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._record: Record | None = None
        self._dead = False
        self._crash: str | None = None
        self._spawned: list[GVisorProcess] = []
        self._counter = itertools.count(1)  # next() is atomic: run() may be called from threads
        self._closed = False
        self._unclean = False
        self._ready = False
        self.start_attempts = 0

    # -- layout ------------------------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        if self._base is None:
            raise SandboxError("the sandbox is not started", hint="call .start() or use `with GVisor() as g:`")
        return self._base / "work"

    @property
    def root_dir(self) -> Path:
        assert self._base is not None
        return self._base / "state"

    @property
    def log_dir(self) -> Path:
        assert self._base is not None
        return self._base / "logs"

    @property
    def python(self) -> str:
        return kit_python()

    @property
    def version(self) -> str:
        return runsc_version(self.runsc_path)

    def _build_name(self) -> str:
        if self.runsc_build:
            return self.runsc_build
        v = self.version
        return "2024" if "2024" in v else "2022" if "2022" in v else "other"

    def flags(self) -> list[str]:
        """Global runsc flags this sandbox is started with (besides --root and the log paths)."""
        extra = list(self.runsc_flags)
        given = {f.split("=", 1)[0].lstrip("-") for f in extra}
        defaults = [f for f in BUILD_DEFAULTS.get(self._build_name(), [])
                    if f.split("=", 1)[0].lstrip("-") not in given]
        out = [f"--network={self.network}"]
        if self.platform:
            out.append(f"--platform={self.platform}")
        if self.cgroupfs:
            out.append("--cgroupfs")
        if self.net_raw:
            out.append("--net-raw")
        if self.debug:
            out.append("--debug")
        return out + defaults + extra

    def _runsc(self, *, logs: bool = False, enter: bool = True) -> list[str]:
        argv = [str(self.runsc_path), f"--root={self.root_dir}"]
        if enter and self.network == "sandbox" and self._proc is not None and self._proc.poll() is None:
            # the sandbox's control socket lives in its network namespace
            argv = ["nsenter", "-t", str(self._proc.pid), "--net", "--", *argv]
        if logs or self.debug:
            argv += [f"--debug-log={self.log_dir}/", f"--panic-log={self.log_dir}/panic.log"]
        return argv

    def _guest_env(self) -> dict[str, str]:
        home = str(self.workdir / ".home")
        return {
            "HOME": home, "TMPDIR": "/tmp", "IPYTHONDIR": f"{home}/.ipython", "MPLCONFIGDIR": f"{home}/.mpl",
            "JUPYTER_CONFIG_DIR": f"{home}/.jupyter", "JUPYTER_DATA_DIR": f"{home}/.jupyter/data",
            "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime", "JUPYTER_PLATFORM_DIRS": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "K3SNB_IN_SANDBOX": "gvisor", **self.extra_env,
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> GVisor:
        if self._proc is not None:
            return self
        if self._closed:
            raise SandboxError("this GVisor was closed", hint="create a new GVisor() for a fresh sandbox")
        try:
            self._base = make_tempdir("gvisor")
            # record first: a kill -9 from here on leaves something the reaper can find
            self._record = Record(kind="gvisor", id=self.id, paths=[str(self._base)], sandboxes=[
                {"runsc": str(self.runsc_path), "root": str(self._base / "state"), "id": self.id}]).save()
            for d in ("work/.home", "state", "logs", "bundle", "pids"):
                (self._base / d).mkdir(parents=True)
            empty = self._base / "bundle" / "masked-empty"  # what a masked secret file reads as
            empty.touch(mode=0o444)
            config = _oci.spec(str(self.workdir), caps=self.caps, binds=self.binds, env=self._guest_env(),
                               hostname=self.hostname or self.id[:60], kit_paths=_kit_paths(),
                               netns_path="/proc/self/ns/net" if self.network == "sandbox" else None,
                               masks=_oci.secret_masks(str(empty), _state_dirs_to_mask(self._base)))
            config["process"]["args"] = ["/bin/sh", "-c", INIT_SCRIPT]
            _oci.write_config(self._base / "bundle", config)
            last = ""
            for attempt in range(self.start_retries + 1):
                if attempt:
                    time.sleep(0.5 * 2 ** (attempt - 1))  # failures come in bursts: back off, do not hammer
                self.start_attempts = attempt + 1
                ok, last = self._try_start(attempt)
                if ok:
                    break
            else:
                # no logs= field: teardown below removes that folder; the reason carries the logs' gist
                raise SandboxError(
                    f"runsc could not create the sandbox ({self.start_attempts} attempts): {_gist(last)}",
                    hint="check runsc flags/platform (info()), or try runsc='2022'", runsc=str(self.runsc_path),
                )
            self._track_open(True)
        except BaseException:
            self._teardown()
            raise
        return self

    def _try_start(self, attempt: int) -> tuple[bool, str]:
        cid = self.id if attempt == 0 else f"{self.id}-r{attempt}"
        self._cid = cid
        self._ready = False
        self._stderr_file = self.log_dir / f"run-{attempt}.stderr"
        argv = [*self._runsc(logs=True, enter=False), *self.flags(), "run", "--bundle",
                str(self._base / "bundle"), cid]
        if self.network == "sandbox":
            # Not under self._base: that may lie inside a kit path bound into the sandbox, and a
            # non-recursive bind of a tree holding this /proc/sys bind fails (EINVAL, locked mount).
            realsys = make_tempdir("procsys", parent=state_dir())
            self._record.paths.append(str(realsys))
            self._record.save()
            argv = ["unshare", "--mount", "--net", "--propagation", "private", "/bin/sh", "-c", NETNS_SCRIPT, "sh",
                    str(realsys), *argv]
        with open(self._stderr_file, "wb") as err:
            # own session: a terminal Ctrl-C must not reach runsc (it would kill the sandbox init)
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=_runsc_env(),
                                          start_new_session=True)
        self._record.add_pid(self._proc.pid)
        self._record.sandboxes[0]["id"] = cid
        self._record.save()
        ready = False
        sel = selectors.DefaultSelector()
        sel.register(self._proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + self.start_timeout
        buf = b""
        try:
            while time.monotonic() < deadline:
                if sel.select(timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
                    chunk = os.read(self._proc.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    buf += chunk
                    if READY.encode() in buf:
                        ready = True
                        break
                elif self._proc.poll() is not None:
                    break
        finally:
            sel.close()
        self._ready = ready
        if ready:
            for pid in children(self._proc.pid):
                self._record.add_pid(pid)
            self._record.save()
            return True, ""
        text = self._stderr_file.read_text(errors="replace")
        try:  # stdout closed: runsc is exiting; its status tells a hang from a failure
            rc = self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            rc = None
        if rc is None and not text:
            text = f"sandbox not ready after {self.start_timeout:.0f}s (runsc run hung)"
        elif not text.strip():  # never an empty reason: say how it ended, plus what runsc logged
            logged = _gist("\n".join(self._log_texts()))
            text = (f"`runsc run` exited with status {rc} without printing an error"
                    + (f"; its logs say: {logged}" if logged else "; it wrote no logs either")
                    + ("" if READY.encode() in buf or rc else "; the sandbox never reported ready"))
        crash = extract_panic(self._log_texts())
        self._unclean = True
        self._destroy_container()
        return False, text + (f"\n{crash}" if crash else "")

    def host_pids(self) -> dict[str, int]:
        """Host pids of this sandbox's processes: ``runsc`` (the run parent), ``sandbox``, ``gofer``.

        Useful for sampling resource use from the host (psutil) or for fault injection in tests.
        """
        if self._proc is None or self._proc.poll() is not None:
            return {}
        out = {"runsc": self._proc.pid}
        for pid in children(self._proc.pid):
            with contextlib.suppress(OSError):
                name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
                if name in ("runsc-sandbox", "runsc-gofer"):
                    out[name.removeprefix("runsc-")] = pid
        return out

    def alive(self) -> bool:
        """True while the sandbox runs (its ``runsc run`` parent exits when the sandbox dies)."""
        if self._proc is None or self._dead:
            return False
        if self._proc.poll() is not None:
            return False
        kids = children(self._proc.pid)
        return any(pid_alive(p) for p in kids) if kids else True

    def close(self) -> None:
        """Destroy the sandbox and remove bundle, state, logs and workdir. Idempotent; works after a crash."""
        self._teardown()

    def _teardown(self) -> None:
        self._track_open(False)
        try:
            self._destroy_container()
        finally:
            for sp in self._spawned:
                if sp.client.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        sp.client.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        sp.client.wait(3)
            self._spawned.clear()
            for p in [p for p in (self._record.paths if self._record else []) if "-procsys-" in p]:
                with contextlib.suppress(OSError):
                    os.rmdir(p)  # an empty mount point (the bind lived in runsc's private namespace)
            if self._base is not None:
                # Normally runsc run reaped its sandbox and gofer. If it had to be killed (or a
                # start failed), sweep /proc for runsc processes carrying our tagged --root path.
                left = [p for p in (self._record.pids if self._record else []) if self._still_ours(p)]
                if left or self._unclean:
                    for p in set(left) | set(pids_with_root(str(self.root_dir))):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(p, signal.SIGKILL)
                    # runsc had no chance to remove the cgroups it made for the container
                    _remove_cgroups([self.id, f"{self.id}-r*"])  # this start's container ids
                shutil.rmtree(self._base, ignore_errors=True)
                if not self._base.exists():
                    self._base = None
            if self._base is None and self._record is not None:
                self._record.drop()  # else keep it: `k3snb doctor --clean` finishes the job
                self._record = None
            self._closed = True

    def _still_ours(self, pid: int) -> bool:
        start = self._record.pid_starts.get(str(pid)) if self._record else None
        return start is not None and proc_start(pid) == start and pid_alive(pid)

    def _destroy_container(self) -> None:
        if self._proc is None:
            return
        kill = [*self._runsc(), "kill", self._cid, "KILL"]  # (entering the sandbox netns if needed)
        proc, self._proc = self._proc, None
        try:
            if proc.poll() is None:
                if self._ready:
                    self._call(kill, timeout=10)
                else:  # interrupted or failed creation: runsc may not answer yet, cut it short
                    self._unclean = True
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._unclean = True
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(5)
            # runsc run deletes its container on exit; if it could not, force it
            if (self.root_dir / self._cid).exists() or any(self.root_dir.glob(f"*{self._cid}*")):
                self._call([*self._runsc(enter=False), "delete", "--force", self._cid], timeout=20)
        finally:
            if proc.stdout:
                proc.stdout.close()

    def _call(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                  env=_runsc_env())
        except subprocess.TimeoutExpired:
            return None

    # -- commands ----------------------------------------------------------------------------
    def _exec_argv(self, argv: list[str], *, env: Mapping[str, str] | None, cwd: str | None,
                   pidfile: Path | None) -> list[str]:
        # runsc strips CAP_NET_RAW from exec'd processes unless exec itself gets --net-raw too
        net_raw = ["--net-raw"] if self.net_raw else []
        out = [*self._runsc(), *net_raw, "exec", "--cwd", cwd or str(self.workdir)]
        if pidfile is not None:
            out += ["--internal-pid-file", str(pidfile)]
        for k, v in (env or {}).items():
            out += ["--env", f"{k}={v}"]
        return [*out, self._cid, *argv]

    def _exec_quiet(self, argv: list[str], timeout: float) -> None:
        if self._proc is not None:
            self._call(self._exec_argv(argv, env=None, cwd="/", pidfile=None), timeout)

    def _log_texts(self) -> list[str]:
        texts = []
        if self._base is None:
            return texts
        files = sorted(self.log_dir.glob("*"), key=lambda p: (p.name != "panic.log", "boot" not in p.name))
        for f in files:
            with contextlib.suppress(OSError):
                if f.is_file():
                    texts.append(f.read_text(errors="replace")[-400_000:])
        return texts

    def crash_text(self) -> str | None:
        """The panic text of a dead sandbox (or a short explanation when there is none)."""
        if self._crash is None and self._dead:
            panic = extract_panic(self._log_texts())
            if panic is None:
                rc = None if self._proc is None else self._proc.poll()
                tail = ""
                with contextlib.suppress(OSError, AttributeError):
                    tail = self._stderr_file.read_text(errors="replace").strip()[-800:]
                panic = f"sandbox process gone (runsc run exit {rc}); no panic text in the runsc logs" + (
                    f"\n{tail}" if tail else "")
            self._crash = panic
        return self._crash

    def _died(self, argv: list[str], t0: float, stdout: str = "", stderr: str = "", rc: int | None = None,
              timed_out: bool = False) -> RunResult:
        self._dead = True
        return RunResult(argv, rc, stdout, stderr, time.monotonic() - t0, self.kind, sandbox_died=True,
                         crash=self.crash_text(), timed_out=timed_out, extra={"runsc_version": self.version})

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
        self._require_started()
        argv = _argv(cmd)
        t0 = time.monotonic()
        if self._dead or not self.alive():
            return self._died(argv, t0).check() if check else self._died(argv, t0)
        pidfile = self._base / "pids" / f"run-{next(self._counter)}"
        limit = self.timeout if timeout is None else float(timeout)
        data = input.encode() if isinstance(input, str) else input
        p = subprocess.Popen(self._exec_argv(argv, env=env, cwd=cwd, pidfile=pidfile), env=_runsc_env(),
                             stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        pipes = _Pipes(p, data)
        state = "interrupted"
        try:
            state = pipes.wait(t0 + limit, abort=lambda: not self.alive())
        finally:
            if state != "exited":  # timeout, dead sandbox or KeyboardInterrupt: end the command inside
                self._kill_exec(p, pidfile, inside=state != "abort")
            with contextlib.suppress(OSError):
                pidfile.unlink()
        timed_out, died = state == "timeout", state == "abort"
        so, se = pipes.result()
        rc = p.returncode
        if died or (rc != 0 and not timed_out and self._looks_dead(rc, se)):
            res = self._died(argv, t0, so, se, rc, timed_out)
        else:
            res = RunResult(argv, None if timed_out else rc, so, se, time.monotonic() - t0, self.kind,
                            timed_out=timed_out, extra={"runsc_version": self.version})
        return res.check() if check else res

    def _require_started(self) -> None:
        if self._base is None or (self._proc is None and not self._dead):
            raise SandboxError("the sandbox is not running (never started, or closed)",
                               hint="use `with GVisor() as g:` or call .start() first")

    def _looks_dead(self, rc: int, stderr: str) -> bool:
        if not self.alive():
            return True
        if rc == RUNSC_FAILED and DEAD_PATTERNS.search(stderr):
            # the runsc run parent notices the sandbox died within moments; wait briefly to be sure
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                if not self.alive():
                    return True
                time.sleep(0.05)
            return True  # these messages come from runsc itself, never from the command
        return False

    def _kill_exec(self, p: subprocess.Popen, pidfile: Path, *, inside: bool) -> None:
        if inside and self.alive():
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                self._exec_quiet(["/bin/kill", "-KILL", "--", f"-{pid}"], timeout=10)
        try:
            p.wait(3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(3)

    def spawn(
        self,
        cmd: Cmd,
        *,
        stdout: str | os.PathLike | None = None,
        stderr: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> GVisorProcess:
        self._require_started()
        if not self.alive():
            raise SandboxError("the sandbox is dead", hint="see .crash_text(); start a fresh GVisor()",
                               crash=(self.crash_text() or "")[:2000])
        argv = _argv(cmd)
        n = next(self._counter)
        out_path = Path(stdout) if stdout else self.workdir / f"spawn-{n}.out"
        err_path = Path(stderr) if stderr else self.workdir / f"spawn-{n}.err"
        pidfile = self._base / "pids" / f"spawn-{n}"
        # O_APPEND: the host fd is handed into the sandbox, which then writes through it
        with _open_logs(out_path, err_path) as (fo, fe):
            client = subprocess.Popen(self._exec_argv(argv, env=env, cwd=cwd, pidfile=pidfile), env=_runsc_env(),
                                      stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, start_new_session=True)
        sp = GVisorProcess(self, argv, client, pidfile, out_path, err_path)
        self._spawned.append(sp)
        return sp

    @property
    def label(self) -> str:
        build = self._build_name()
        return f"gvisor-{build}" if build != "other" else "gvisor"

    @classmethod
    def spec_label(cls, options: Mapping[str, Any]) -> str:
        runsc = options.get("runsc")
        if runsc is None:
            return "gvisor-2022"  # the system build
        return f"gvisor-{runsc}" if str(runsc) in VERSIONS else "gvisor"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            own_kernel=True, has_real_cgroups=False, needs_net_raw=True,
            root_fstype="9p",  # the host root through the gofer (also with directfs in 2024)
            private_tmp=True,  # _oci.TMPFS_DIRS
            private_pids=True,
            shares_host_network=self.network == "host",  # hostinet: the sandbox uses the host's stack
            host_network_writable=False,  # netstack, or hostinet which cannot change host routes/iptables
        )

    def sandbox_pids(self) -> list[int]:
        """Host pids of the runsc processes holding this sandbox (identity: our tagged ``--root``)."""
        return pids_with_root(str(self.root_dir)) if self._base is not None else []

    def info(self) -> dict[str, Any]:
        return {
            **self._info_base(),
            "runsc": str(self.runsc_path),
            "runsc_version": self.version,
            "flags": self.flags(),
            "platform": self.platform or ("systrap" if self._build_name() == "2024" else "ptrace"),
            "network": self.network,
            "caps": len(self.caps),
            "binds": [f"{b.source}:{b.destination}:{'ro' if b.readonly else 'rw'}" for b in self.binds],
            "id": getattr(self, "_cid", self.id),
            "start_attempts": self.start_attempts,
        }

    def __repr__(self) -> str:
        state = "running" if self.alive() else ("dead" if self._dead else "stopped")
        return f"<GVisor {self._build_name()} runsc {self.version} {state} {' '.join(self.flags())}>"
