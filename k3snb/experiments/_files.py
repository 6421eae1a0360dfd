"""Run-folder files: written whole or not at all (temp file + rename), and a full disk reported once."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from ..errors import K3snbError, UsageError

_PROBE_BYTES = 64 * 1024  # the writability check writes real bytes: an empty file fits on a full disk


class RunStorageError(K3snbError):
    """The run folder stopped accepting writes (full disk, quota, read-only remount)."""


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a sibling temp file renamed into place (never a partial file).

    Raises:
        OSError: the write failed; the temp file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    raw = data.encode() if isinstance(data, str) else data
    try:
        # O_EXCL|O_NOFOLLOW: never write through a planted symlink or someone else's temp file
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class Reserve:
    """Real bytes set aside in the run folder, given back when the disk fills so the final summary fits."""

    SIZE = 512 * 1024

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".k3snb-reserve"
        write_atomic(self.path, b"\0" * self.SIZE)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def is_storage_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


def storage_error(path: Path, e: OSError) -> RunStorageError:
    free = ""
    with contextlib.suppress(OSError):
        free = f" ({shutil.disk_usage(path).free // 1024} KiB free)"
    return RunStorageError(f"cannot write to the run folder {path}: {e.strerror or e}{free}",
                           hint="free disk space (or pass --out on a bigger filesystem) and re-run the "
                                "experiments the summary lists as not run")


def check_writable(run: Path, label: str) -> None:
    """Write and remove real bytes in ``run``; raise a UsageError naming ``label`` when that fails."""
    probe = run / f".k3snb-write-test-{os.getpid()}"
    try:
        write_atomic(probe, b"\0" * _PROBE_BYTES)
        probe.unlink()
    except OSError as e:
        with contextlib.suppress(OSError):
            probe.unlink()
        free = ""
        with contextlib.suppress(OSError):
            free = f" ({shutil.disk_usage(run).free // 1024} KiB free)"
        raise UsageError(f"{label} is not writable: {e.strerror or e}{free}",
                         hint="pass a folder you can write to, on a filesystem with free space (--out DIR)") from None
