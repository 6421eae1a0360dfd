"""Rows stream from the tracer to an Arrow IPC file in batches; readers memory-map it lazily.

The tracer keeps at most ``batch`` rows in memory, so a million-syscall trace costs the same
tracer memory as a thousand-syscall one. pyarrow is imported at the first flush only, so short
interceptions without a trace never pay its import time.
"""

from __future__ import annotations

import os
from pathlib import Path

FIELDS = ("time", "pid", "tid", "parent", "exe", "event", "syscall", "args", "path", "path2",
          "fd", "open_flags", "ret", "errno", "duration", "detail")
_TYPES = ("float64", "int64", "int64", "int64", "string", "string", "string", "string", "string",
          "string", "int64", "string", "int64", "string", "float64", "string")


def schema():
    import pyarrow as pa

    return pa.schema([pa.field(n, getattr(pa, t)()) for n, t in zip(FIELDS, _TYPES, strict=True)])


class RowWriter:
    """Append row tuples (in ``FIELDS`` order); ``close()`` always leaves a readable file."""

    def __init__(self, path: str | os.PathLike, batch: int = 20_000) -> None:
        self.path = Path(path)
        self.batch = batch
        self.rows: list[tuple] = []
        self.count = 0
        self._writer = None
        self._schema = None

    def __call__(self, row: tuple) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        if self._writer is None:
            self._schema = schema()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = ipc.new_file(str(self.path), self._schema)
        if not self.rows:
            return
        cols = list(zip(*self.rows, strict=True))
        arrays = [pa.array(c, type=f.type) for c, f in zip(cols, self._schema, strict=True)]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self._schema))
        self.count += len(self.rows)
        self.rows = []

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def open_table(path: str | os.PathLike, columns: list[str] | None = None):
    """Memory-map the file and return a pyarrow Table (only ``columns`` are materialised)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    source = pa.memory_map(str(path), "r")
    table = ipc.open_file(source).read_all()
    return table.select(columns) if columns else table
