"""Tags for everything the kit starts, so that a killed run's leftovers can be found and reaped.

A record is a small JSON file in :func:`k3snb._paths.state_dir` naming its owner (pid plus process
start time, so pid reuse is not mistaken for a live owner) and what to clean: ``pids`` to kill,
``mounts`` to unmount, ``paths`` to remove, ``sandboxes`` (runsc root + container id) to delete.
Records whose owner is gone are *stale*; :func:`k3snb.runners.reaper.clean` removes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._paths import TAG, state_dir, tmp_root
from ._procfs import proc_start

# Environment tag every process of a run inherits: ``<record id>/<cell>``. A live process carrying
# the id of a stale record is an orphan of a killed run; ``doctor`` reports it, ``--clean`` kills it.
RUN_TAG_ENV = "K3SNB_RUN_TAG"


@dataclass
class Record:
    kind: str
    id: str
    owner_pid: int = field(default_factory=os.getpid)
    owner_start: float | None = None
    created: float = field(default_factory=time.time)
    pids: list[int] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    sandboxes: list[dict] = field(default_factory=list)
    note: str = ""
    # pid -> start time, so the reaper can tell a tagged pid from a reused one
    pid_starts: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.owner_start is None:
            self.owner_start = proc_start(self.owner_pid)

    @property
    def file(self) -> Path:
        return state_dir() / f"{self.kind}-{self.id}.json"

    def save(self) -> Record:
        """Write the record atomically: a fresh temp file (O_EXCL, never a planted name or symlink)
        renamed over the record."""
        target = self.file
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(asdict(self)))
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return self

    def drop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.file.unlink()

    def add_pid(self, pid: int) -> Record:
        """Tag ``pid`` (with its start time) for reaping; call :meth:`save` afterwards."""
        if pid not in self.pids:
            self.pids.append(pid)
        start = proc_start(pid)
        if start is not None:
            self.pid_starts[str(pid)] = start
        return self

    def owner_alive(self) -> bool:
        start = proc_start(self.owner_pid)
        return start is not None and start == self.owner_start


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def records() -> list[Record]:
    """Every record in the state dir. Only regular files owned by this user count: a record names
    processes to kill and paths to remove, so one someone else planted is never acted on."""
    out = []
    me = os.geteuid()
    for f in sorted(state_dir().glob("*.json")):
        try:
            fd = os.open(f, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd) as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_uid != me:
                    continue
                out.append(Record(**json.loads(fh.read())))
        except (OSError, ValueError, TypeError):
            continue
    return out


def stale_records() -> list[Record]:
    return [r for r in records() if not r.owner_alive()]


def make_tempdir(purpose: str, parent: str | os.PathLike | None = None) -> Path:
    """A temp dir tagged ``k3snb-<purpose>-*``; caller removes it (or the reaper does)."""
    return Path(tempfile.mkdtemp(prefix=f"{TAG}-{purpose}-", dir=parent or tmp_root()))


@contextlib.contextmanager
def tracked_tempdir(purpose: str, parent: str | os.PathLike | None = None) -> Iterator[Path]:
    """A tagged temp dir with a state record; removed on any exit, including KeyboardInterrupt."""
    path = make_tempdir(purpose, parent)
    rec = Record(kind="tmp", id=path.name, paths=[str(path)]).save()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        rec.drop()
