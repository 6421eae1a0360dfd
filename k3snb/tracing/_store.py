"""Trace rows: streamed by the tracer as column batches, converted to an Arrow IPC file, read lazily.

Two stages, so the tracer stays light and its memory bounded:

1. The tracer holds at most ``batch`` rows; each full batch is written as one ``marshal``-encoded
   list of columns (length-prefixed) to a ``.rows`` file. No pyarrow/pandas import in the tracer
   (importing them costs ~1 s, and pyarrow pulls in pandas on first use).
2. :func:`convert` turns that stream into an Arrow IPC file batch by batch (again bounded), in the
   analysis process; :func:`open_table` memory-maps it and materialises only selected columns.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import struct
from collections.abc import Iterator
from pathlib import Path

FIELDS = ("time", "pid", "tid", "parent", "exe", "event", "syscall", "args", "path", "path2",
          "fd", "open_flags", "ret", "errno", "duration", "detail")
_TYPES = ("float64", "int64", "int64", "int64", "string", "string", "string", "string", "string",
          "string", "int64", "string", "int64", "string", "float64", "string")
_LEN = struct.Struct("<Q")
MAGIC = b"K3SNBROWS1\n"


def create_new(near: str | os.PathLike) -> tuple[int, Path]:
    """Create a fresh file with a random name in ``near``'s folder: ``(fd, path)``.

    ``O_EXCL|O_NOFOLLOW``: never opens a file or symlink someone planted under a predictable name
    (``<out>.rows`` in a shared sticky folder). The folder must exist: it is not created.
    Publish the finished file with ``os.replace`` (which replaces a planted symlink, never follows it).
    """
    def make(tmp: Path) -> int:
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)

    return _fresh(Path(near), make)


def _fresh(near: Path, make) -> tuple:
    # ``make(path)`` must fail with FileExistsError when the name is taken (O_EXCL, link)
    for _ in range(100):
        tmp = near.parent / f".{near.name}.{os.urandom(4).hex()}.tmp"
        try:
            return make(tmp), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {near}")


def _unnamed(folder: Path) -> int:
    # an O_TMPFILE file has no name until linked: nothing to plant a symlink at, nothing left on SIGKILL
    try:
        return os.open(folder if str(folder) else ".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o644)
    except (OSError, AttributeError):  # 9p and other filesystems without O_TMPFILE
        return -1


def _link_fd(fd: int, path: Path) -> None:
    # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names an O_TMPFILE file; os.link uses plain
    # link() (which cannot follow that magic link) unless a dir fd is given
    folder = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", path.name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=True)
    finally:
        os.close(folder)


def schema():
    import pyarrow as pa

    return pa.schema([pa.field(n, getattr(pa, t)()) for n, t in zip(FIELDS, _TYPES, strict=True)])


class RowWriter:
    """Append row tuples (in ``FIELDS`` order); ``close()`` always leaves a readable stream.

    With ``publish=True`` the stream is a new file (:func:`create_new`) renamed to ``dest`` at
    once: a killed tracer leaves a readable stream there. Otherwise it is an unnamed file
    (``O_TMPFILE``) in ``dest``'s folder, readable at ``self.path`` until :meth:`discard`, so a
    SIGKILL leaves nothing behind (filesystems without ``O_TMPFILE``: a hidden random name).
    """

    def __init__(self, dest: str | os.PathLike, batch: int = 20_000, *, publish: bool = True) -> None:
        self.batch = batch
        self.rows: list[tuple] = []
        self.count = 0
        self.batches = 0
        self.published = publish
        self._keep = -1  # a second fd on the unnamed file: it lives as long as this is open
        fd = -1 if publish else _unnamed(Path(dest).parent)
        if fd >= 0:
            self._keep = os.dup(fd)
            self.path = Path(f"/proc/self/fd/{self._keep}")
        else:
            fd, self.path = create_new(dest)
        try:
            if publish:
                os.replace(self.path, dest)
                self.path = Path(dest)
            self._f = open(fd, "wb")  # noqa: SIM115 - closed in close()
        except BaseException:
            os.close(fd)
            self.discard()
            raise
        self._f.write(MAGIC)

    def discard(self) -> None:
        """Remove the stream (an unnamed one disappears with its last fd)."""
        if self._keep >= 0:
            os.close(self._keep)
            self._keep = -1
        elif not self.published:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def __call__(self, row: tuple) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        data = marshal.dumps([list(c) for c in zip(*self.rows, strict=True)])
        self._f.write(_LEN.pack(len(data)))
        self._f.write(data)
        self.count += len(self.rows)
        self.batches += 1
        self.rows = []

    def close(self) -> None:
        if self._f.closed:
            return
        self.flush()
        self._f.close()


def read_batches(path: str | os.PathLike) -> Iterator[list[list]]:
    """Column batches from a ``.rows`` stream (a torn last batch, e.g. after SIGKILL, is dropped)."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path} is not a k3snb row stream")
        while True:
            head = f.read(_LEN.size)
            if len(head) < _LEN.size:
                return
            (n,) = _LEN.unpack(head)
            data = f.read(n)
            if len(data) < n:
                return
            yield marshal.loads(data)


def convert(rows: str | os.PathLike, arrow: str | os.PathLike) -> int:
    """Write the Arrow IPC file for a row stream, one record batch per tracer batch; returns rows."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    sc = schema()
    n = 0
    anon = _unnamed(Path(arrow).parent)  # named only once complete (see _unnamed)
    if anon >= 0:
        fd, tmp = anon, Path(f"/proc/self/fd/{anon}")
    else:
        fd, tmp = create_new(arrow)
        os.close(fd)  # pyarrow reopens the fresh, randomly named file by name
    try:
        with ipc.new_file(str(tmp), sc) as w:
            for cols in read_batches(rows):
                arrays = [pa.array(c, type=f.type) for c, f in zip(cols, sc, strict=True)]
                w.write_batch(pa.RecordBatch.from_arrays(arrays, schema=sc))
                n += len(cols[0])
        if anon >= 0:
            # link the finished file under a fresh random name, then rename that over ``arrow``
            _, tmp = _fresh(Path(arrow), lambda p: _link_fd(anon, p))
        os.replace(tmp, arrow)
    except BaseException:
        if anon < 0 or tmp != Path(f"/proc/self/fd/{anon}"):
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    finally:
        if anon >= 0:
            os.close(anon)
    return n


def open_table(path: str | os.PathLike, columns: list[str] | None = None):
    """Memory-map the Arrow file and return a pyarrow Table (only ``columns`` are materialised)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    source = pa.memory_map(str(path), "r")
    table = ipc.open_file(source).read_all()
    return table.select(columns) if columns else table
