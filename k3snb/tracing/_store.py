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
    near = Path(near)
    folder = near.parent
    for _ in range(100):
        tmp = folder / f".{near.name}.{os.urandom(4).hex()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            continue
        return fd, tmp
    raise FileExistsError(f"no free temporary name next to {near}")


def schema():
    import pyarrow as pa

    return pa.schema([pa.field(n, getattr(pa, t)()) for n, t in zip(FIELDS, _TYPES, strict=True)])


class RowWriter:
    """Append row tuples (in ``FIELDS`` order); ``close()`` always leaves a readable stream.

    The stream goes to a new file made by :func:`create_new` next to ``dest``. With
    ``publish=True`` it is renamed to ``dest`` at once (a killed tracer leaves a readable stream
    there); otherwise it stays at ``self.path`` for the caller to convert and remove.
    """

    def __init__(self, dest: str | os.PathLike, batch: int = 20_000, *, publish: bool = True) -> None:
        self.batch = batch
        self.rows: list[tuple] = []
        self.count = 0
        self.batches = 0
        fd, self.path = create_new(dest)
        try:
            if publish:
                os.replace(self.path, dest)
                self.path = Path(dest)
            self._f = open(fd, "wb")  # noqa: SIM115 - closed in close()
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise
        self._f.write(MAGIC)

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
    fd, tmp = create_new(arrow)
    os.close(fd)  # pyarrow reopens the fresh, randomly named file by name
    try:
        with ipc.new_file(str(tmp), sc) as w:
            for cols in read_batches(rows):
                arrays = [pa.array(c, type=f.type) for c, f in zip(cols, sc, strict=True)]
                w.write_batch(pa.RecordBatch.from_arrays(arrays, schema=sc))
                n += len(cols[0])
        os.replace(tmp, arrow)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return n


def open_table(path: str | os.PathLike, columns: list[str] | None = None):
    """Memory-map the Arrow file and return a pyarrow Table (only ``columns`` are materialised)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    source = pa.memory_map(str(path), "r")
    table = ipc.open_file(source).read_all()
    return table.select(columns) if columns else table
