"""Tracee memory: strings and bytes read through ``/proc/TID/mem``; writes by ``pwrite`` or ``PTRACE_POKEDATA``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import _ptrace as P
from ._task import Task

if TYPE_CHECKING:
    from ._features import Features

RED_ZONE_GAP = 256  # bytes kept free below rsp: the 128-byte ABI red zone plus margin


class Memory:
    """Reads and writes one tracer's tracees' memory; ``features.mem_write`` says whether pwrite works
    (it is switched off for good the first time the kernel refuses, e.g. gVisor's EINVAL)."""

    def __init__(self, features: Features) -> None:
        self.features = features

    def memfd(self, t: Task) -> int:
        if t.memfd < 0:
            t.memfd = os.open(f"/proc/{t.tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        return t.memfd

    def read_str(self, t: Task, addr: int, limit: int = 4096) -> bytes | None:
        if addr == 0:
            return None
        try:
            fd = self.memfd(t)
            out = b""
            first = True
            while len(out) < limit:
                n = 4096 - (addr & 4095)  # never cross a page in one read: the next may be unmapped
                if first and n > 256:
                    n = 256
                first = False
                chunk = os.pread(fd, n, addr)
                if not chunk:
                    return out
                i = chunk.find(b"\0")
                if i >= 0:
                    return out + chunk[:i]
                out += chunk
                addr += len(chunk)
            return out
        except OSError:
            return None

    def read_mem(self, t: Task, addr: int, n: int) -> bytes:
        return os.pread(self.memfd(t), n, addr)

    def write_mem(self, t: Task, addr: int, data: bytes) -> None:
        if self.features.mem_write:
            try:
                if t.wmemfd < 0:
                    t.wmemfd = os.open(f"/proc/{t.tid}/mem", os.O_RDWR | os.O_CLOEXEC)
                if os.pwrite(t.wmemfd, data, addr) == len(data):
                    return
            except OSError:
                pass
            self.features.mem_write = False  # refused after all: use POKEDATA from now on
        # PTRACE_POKEDATA word by word; ``addr`` is 8-aligned and data padded by the caller
        for off in range(0, len(data), 8):
            P.pokedata(t.tid, addr + off, int.from_bytes(data[off:off + 8], "little"))

    def poke_partial(self, t: Task, addr: int, data: bytes) -> None:
        # small in-place patch (statfs f_type): read-modify-write the aligned words around it
        start = addr & ~7
        end = (addr + len(data) + 7) & ~7
        buf = bytearray(self.read_mem(t, start, end - start))
        buf[addr - start: addr - start + len(data)] = data
        self.write_mem(t, start, bytes(buf))

    @staticmethod
    def close(t: Task) -> None:
        """Close the task's /proc/TID/mem fds (after an exec they point at the old address space)."""
        for fd in (t.memfd, t.wmemfd):
            if fd >= 0:
                os.close(fd)
        t.memfd = t.wmemfd = -1
