"""Trace rows: streamed by the tracer as column batches, converted to an Arrow IPC file, read lazily.

Two stages, so the tracer stays light and its memory bounded:

1. The tracer holds at most ``batch`` rows; each full batch is written as one ``marshal``-encoded
   list of columns (length-prefixed) to a ``.rows`` file. No pyarrow/pandas import in the tracer
   (importing them costs ~1 s, and pyarrow pulls in pandas on first use).
2. :func:`convert` turns that stream into an Arrow IPC file batch by batch (again bounded), in the
   analysis process; :func:`open_table` memory-maps it and materialises only selected columns.
"""

from __future__ import annotations

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


def schema():
    import pyarrow as pa

    return pa.schema([pa.field(n, getattr(pa, t)()) for n, t in zip(FIELDS, _TYPES, strict=True)])


class RowWriter:
    """Append row tuples (in ``FIELDS`` order); ``close()`` always leaves a readable stream."""

    def __init__(self, path: str | os.PathLike, batch: int = 20_000) -> None:
        self.path = Path(path)
        self.batch = batch
        self.rows: list[tuple] = []
        self.count = 0
        self.batches = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
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
    tmp = Path(str(arrow) + ".part")
    with ipc.new_file(str(tmp), sc) as w:
        for cols in read_batches(rows):
            arrays = [pa.array(c, type=f.type) for c, f in zip(cols, sc, strict=True)]
            w.write_batch(pa.RecordBatch.from_arrays(arrays, schema=sc))
            n += len(cols[0])
    os.replace(tmp, arrow)
    return n


def open_table(path: str | os.PathLike, columns: list[str] | None = None):
    """Memory-map the Arrow file and return a pyarrow Table (only ``columns`` are materialised)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    source = pa.memory_map(str(path), "r")
    table = ipc.open_file(source).read_all()
    return table.select(columns) if columns else table
