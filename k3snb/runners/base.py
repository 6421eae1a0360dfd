"""The one seam every experiment runs through: a Runner runs commands and Python callables
somewhere (a private namespace on the host, a gVisor sandbox) and always cleans up after itself.

Contract for implementations:
* ``start()`` creates the environment; ``close()`` destroys it and everything started in it; both
  are idempotent. ``with runner:`` calls them, including on exceptions and KeyboardInterrupt.
* ``run(cmd)`` never raises for a non-zero exit: it returns a :class:`RunResult`. A dead sandbox
  is a result too (``sandbox_died=True`` with ``crash`` text); ``check=True`` turns both into errors.
* ``workdir`` is a directory that has the same path on the host and inside the runner and is
  writable from both; ``copy_in``/``copy_out`` move files through it.
* ``python`` is an interpreter inside the runner that can import ``k3snb``.
* ``capabilities`` says what the environment offers (:class:`Capabilities`); callers branch on it,
  never on ``kind``. ``label`` names the runner in tables (``host``, ``gvisor-2024``).
* Options meant for another kind of runner (``IGNORES``) are accepted and kept in
  ``ignored_options``; unknown names raise :class:`~k3snb.errors.InvalidParameter`.
* Runner specs (``"gvisor:2024:ptrace"``) are parsed in :mod:`k3snb.runners` (``resolve``), not here.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import json
import os
import pickle
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..errors import CommandFailed, InvalidParameter, RemoteError, SandboxDied
from ..report import Rich, render

Cmd = str | Sequence[str]


def _argv(cmd: Cmd) -> list[str]:
    # A plain string is a shell command line, like subprocess(shell=True) but explicit.
    return ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else [str(a) for a in cmd]


@dataclass(repr=False)  # keep Rich.__repr__ (one line) instead of the dataclass dump
class RunResult(Rich):
    """What one command did: modelled on ``subprocess.CompletedProcess``."""

    args: list[str]
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    runner: str = ""
    sandbox_died: bool = False
    crash: str | None = None
    timed_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    _title_text = "command result"

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.sandbox_died and not self.timed_out

    def check(self) -> RunResult:
        """Return self when the command succeeded, else raise CommandFailed / SandboxDied."""
        if self.sandbox_died:
            raise SandboxDied(
                "the sandbox died while running the command",
                hint="see .crash for the panic text; rerun with a fresh sandbox",
                runner=self.runner,
                panic=(self.crash or "")[:2000],
            )
        if not self.ok:
            tail = (self.stderr or self.stdout).strip().splitlines()[-5:]
            raise CommandFailed(
                f"command exited {self.returncode}" + (" (timed out)" if self.timed_out else "")
                + f": {shlex.join(self.args)[:200]}" + ("\n  " + "\n  ".join(tail) if tail else ""),
                runner=self.runner,
            )
        return self

    def summary(self) -> dict[str, Any]:
        return {
            "runner": self.runner,
            "returncode": self.returncode,
            "duration_s": round(self.duration, 3),
            "sandbox_died": self.sandbox_died,
        }

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{"args": shlex.join(self.args), **self.summary()}])

    def _repr_text(self) -> str:
        state = "DIED" if self.sandbox_died else f"rc={self.returncode}"
        return f"<RunResult {self.runner} {state} {self.duration:.3f}s {shlex.join(self.args)[:80]!r}>"

    def _repr_html_(self) -> str:
        sections = [("stdout", self.stdout or "(empty)"), ("stderr", self.stderr or "(empty)")]
        if self.crash:
            sections.append(("crash", self.crash))
        return render(f"$ {shlex.join(self.args)}", self.summary(), sections, text=self._repr_text())


@dataclass(frozen=True)
class Capabilities:
    """What a runner's environment offers; callers branch on these, never on the runner's kind."""

    own_kernel: bool
    """Commands meet an emulated kernel (gVisor's Sentry): sysctl writes, mounts and modules stay inside."""
    has_real_cgroups: bool
    """The host kernel's cgroup controllers are what commands see under /sys/fs/cgroup."""
    needs_net_raw: bool
    """Raw sockets (legacy iptables, ping) need the runner's ``net_raw`` option."""
    root_fstype: str
    """Filesystem type of ``/`` as commands see it (``9p`` for gVisor's view of the host root)."""
    private_tmp: bool
    """``/tmp``, ``/run`` and ``/var/lib`` are private tmpfs mounts, not the host's directories."""
    private_pids: bool
    """The runner has its own pid namespace: killing by command-line pattern stays inside it."""
    shares_host_network: bool
    """A server listening inside is reachable from this process (same network namespace)."""
    host_network_writable: bool
    """Commands can change the host's iptables, routes and links (kube-proxy, flannel, CNI)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Spawned(Protocol):
    """Handle of a background process started by :meth:`Runner.spawn`."""

    args: list[str]
    stdout_path: Path
    stderr_path: Path

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int | None: ...

    def terminate(self, grace: float = 10.0) -> int | None:
        """SIGTERM the whole process group, SIGKILL after ``grace`` seconds; returns the exit code."""
        ...

    def kill(self) -> None: ...


class BackgroundProcess:
    """Shared half of the runners' :class:`Spawned` handles: ``client`` is the host-side Popen
    (nsenter / runsc exec) whose exit status is the command's; subclasses deliver signals to the
    command's process group where it lives."""

    def __init__(self, args: list[str], client: subprocess.Popen, stdout_path: Path, stderr_path: Path) -> None:
        self.args = args
        self.client = client
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.args!r} rc={self.poll()}>"

    def _signal_group(self, sig: signal.Signals) -> None:
        raise NotImplementedError

    def poll(self) -> int | None:
        return self.client.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.client.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, grace: float = 10.0) -> int | None:
        if self.client.poll() is None:
            self._signal_group(signal.SIGTERM)
            if self.wait(grace) is None:
                self.kill()
        return self.wait(5)

    def kill(self) -> None:
        if self.client.poll() is None:
            self._signal_group(signal.SIGKILL)
            if self.wait(3) is None:
                with contextlib.suppress(ProcessLookupError):
                    self.client.kill()
                self.wait(3)


@contextlib.contextmanager
def _open_logs(out_path: Path, err_path: Path):
    """Append-mode files for a background process; one shared fd when both name the same file."""
    with open(out_path, "ab") as fo:
        if os.path.abspath(err_path) == os.path.abspath(out_path):
            yield fo, fo
        else:
            with open(err_path, "ab") as fe:
                yield fo, fe


class _Pipes:
    """Collect a child's stdout/stderr (and feed stdin) in threads, so waiting is about the *process*.

    ``subprocess.communicate`` waits for EOF, which never comes while a background grandchild
    (``cmd &``, a daemon) still holds the pipe: run() would hang until its timeout. Here we wait for
    the process, then give the pipes a short grace and return what arrived.
    """

    def __init__(self, p: subprocess.Popen, data: bytes | None) -> None:
        self.p = p
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.threads = [threading.Thread(target=self._read, args=(p.stdout, self.out), daemon=True),
                        threading.Thread(target=self._read, args=(p.stderr, self.err), daemon=True)]
        if data is not None:
            self.threads.append(threading.Thread(target=self._write, args=(p.stdin, data), daemon=True))
        for t in self.threads:
            t.start()

    @staticmethod
    def _read(f, sink: list[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := f.read1(65536):
                sink.append(chunk)

    @staticmethod
    def _write(f, data: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):
            f.write(data)
            f.close()

    def wait(self, deadline: float, abort=None) -> str:
        """Wait for the process: ``"exited"``, ``"timeout"`` or ``"abort"`` (``abort()`` said so)."""
        # a pidfd wakes us the moment the process exits; Popen.wait(timeout) polls with sleeps of
        # up to 50 ms, which would add ~30 ms to every 30 ms sandbox exec
        try:
            fd = os.pidfd_open(self.p.pid)
        except ProcessLookupError:
            self.p.wait()
            return "exited"
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], min(0.5, max(0.0, deadline - time.monotonic())))
                if ready:
                    self.p.wait()
                    return "exited"
                if abort is not None and abort():
                    return "abort"
                if time.monotonic() >= deadline:
                    return "timeout"
        finally:
            os.close(fd)

    def result(self, grace: float = 1.0) -> tuple[str, str]:
        end = time.monotonic() + grace
        for t in self.threads[:2]:
            t.join(max(0.0, end - time.monotonic()))
        return (b"".join(self.out).decode(errors="replace"), b"".join(self.err).decode(errors="replace"))


RUNNERS_LOG_ENV = "K3SNB_RUNNERS_LOG"

# Runners still open when the interpreter exits (a notebook kernel shut down without close()).
_OPEN: weakref.WeakSet[Runner] = weakref.WeakSet()


@atexit.register
def _close_open_runners() -> None:
    for r in list(_OPEN):
        with contextlib.suppress(Exception):
            r.close()


class Runner(abc.ABC):
    """Base class of execution environments; the registry of kinds is in :mod:`k3snb.runners`.

    Callers ask :attr:`capabilities` what the environment offers instead of testing ``kind``;
    options a runner does not use are kept in :attr:`ignored_options` (and in :meth:`info`).
    """

    kind: ClassVar[str] = ""
    # options of other runners this one accepts and ignores (so one spec + options fits every runner)
    OPTIONS: ClassVar[tuple[str, ...]] = ()
    SPEC_FIELDS: ClassVar[tuple[str, ...]] = ()  # options a spec string carries after "name:", in order
    REQUIRES: ClassVar[tuple[str, ...]] = ()  # what the machine must offer (capability flags: "root", "runsc")
    IGNORES: ClassVar[frozenset[str]] = frozenset()
    ignored_options: dict[str, Any] = {}  # noqa: RUF012 (replaced per instance by _take_ignored)

    def _take_ignored(self, unknown: dict[str, Any]) -> None:
        """Keep the other runners' options (those that would change something) as ignored; raise on
        names no runner knows."""
        bad = sorted(set(unknown) - self.IGNORES)
        if bad:
            raise InvalidParameter(f"unknown {type(self).__name__} option(s) {bad}",
                                   hint=f"valid options: {', '.join(self.OPTIONS)}")
        self.ignored_options = {k: v for k, v in unknown.items() if v not in (None, False, (), [], {}, "")}

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What this environment offers (see :class:`Capabilities`)."""

    @property
    def label(self) -> str:
        """Short name for tables and probe labels (``host``, ``gvisor-2024``)."""
        return self.spec_label({})

    @classmethod
    def spec_label(cls, options: Mapping[str, Any]) -> str:
        """The label of a runner built with ``options`` (no instance needed)."""
        return cls.kind

    def sandbox_pids(self) -> list[int]:
        """Host pids of the sandbox that holds the runner's processes (empty when they are host processes)."""
        return []

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def start(self) -> Runner: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def run(
        self,
        cmd: Cmd,
        *,
        input: bytes | str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = False,
    ) -> RunResult: ...

    def spawn(
        self,
        cmd: Cmd,
        *,
        stdout: str | os.PathLike | None = None,
        stderr: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> Spawned:
        """Start a long-running command in the background (k3s, containerd, a traced tree).

        Output goes to host-visible files (default: under ``workdir``). The process group is
        ended by ``Spawned.terminate()`` and, at the latest, by ``close()``.
        """
        raise NotImplementedError(f"{type(self).__name__}.spawn")

    @property
    @abc.abstractmethod
    def workdir(self) -> Path: ...

    @property
    def python(self) -> str:
        from .._paths import kit_python

        return kit_python()

    def alive(self) -> bool:
        return True

    def _track_open(self, is_open: bool) -> None:
        """Implementations call this from start()/close() so an exiting interpreter closes them."""
        if is_open:
            _OPEN.add(self)
            self._note_started()
        else:
            _OPEN.discard(self)

    def _note_started(self) -> None:
        """Append this runner's ``info()`` as one JSON line to ``$K3SNB_RUNNERS_LOG`` when set (the
        experiment layer sets it per cell to record which runners a notebook really used)."""
        path = os.environ.get(RUNNERS_LOG_ENV)
        if not path:
            return
        with contextlib.suppress(OSError, TypeError, ValueError):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(json.dumps(self.info(), default=str) + "\n")

    def info(self) -> dict[str, Any]:
        """Facts to record with every result (kind, runsc version, flags …)."""
        return self._info_base()

    def _info_base(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "label": self.label}
        if getattr(self, "ignored_options", None):
            out["ignored_options"] = sorted(self.ignored_options)
        return out

    # -- files -------------------------------------------------------------------------------
    def copy_in(self, src: str | os.PathLike, dst: str) -> str:
        """Copy a host file or directory to ``dst`` inside the runner; returns ``dst``."""
        staged = self.workdir / ".xfer" / Path(src).name
        staged.parent.mkdir(parents=True, exist_ok=True)
        _copy(Path(src), staged)
        self.run(["mkdir", "-p", str(Path(dst).parent)], check=True)
        self.run(["cp", "-a", str(staged), dst], check=True)
        _remove(staged)
        return dst

    def copy_out(self, src: str, dst: str | os.PathLike) -> Path:
        """Copy ``src`` from inside the runner to the host path ``dst``; returns ``dst``."""
        staged = self.workdir / ".xfer" / Path(src).name
        staged.parent.mkdir(parents=True, exist_ok=True)
        _remove(staged)
        self.run(["cp", "-a", src, str(staged)], check=True)
        _copy(staged, Path(dst))
        _remove(staged)
        return Path(dst)

    # -- python ------------------------------------------------------------------------------
    def run_python(self, func: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Call an importable (module-level) function inside the runner and return its result.

        Arguments and result travel by pickle through ``workdir``. An exception inside becomes
        :class:`~k3snb.errors.RemoteError` carrying the remote traceback; a dead sandbox raises
        :class:`~k3snb.errors.SandboxDied`.
        """
        job = self.workdir / f".call-{os.getpid()}-{time.monotonic_ns()}"
        job.mkdir(parents=True)
        try:
            (job / "in.pkl").write_bytes(pickle.dumps((func, args, kwargs)))
            env = {"PYTHONDONTWRITEBYTECODE": "1"}
            res = self.run(
                [self.python, "-m", "k3snb.runners._callable", str(job)], timeout=timeout, env=env
            )
            if res.sandbox_died:
                res.check()
            out = job / "out.pkl"
            if not out.exists():
                raise RemoteError(
                    f"{getattr(func, '__qualname__', func)} produced no result (rc={res.returncode})",
                    hint="see stderr",
                    stderr=res.stderr[-2000:],
                )
            ok, value = pickle.loads(out.read_bytes())
            if ok:
                return value
            raise RemoteError(f"{getattr(func, '__qualname__', func)} raised inside {self.kind}:\n{value}")
        finally:
            shutil.rmtree(job, ignore_errors=True)


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()

