"""Tracee paths as the kernel resolves them: absolute, or relative to the cwd or a directory fd (via ``/proc/TID``)."""

from __future__ import annotations

import os

from ._decode import AT_FDCWD


def abspath(tid: int, path: bytes, dirfd: int | None) -> bytes | None:
    """``path`` as the kernel resolves it for ``tid``: absolute, or relative to its cwd or ``dirfd``."""
    if path.startswith(b"/"):
        return os.path.normpath(path) if (b"/." in path or b"//" in path) else path
    if not path:
        return None
    try:
        if dirfd is None or dirfd == AT_FDCWD:
            base = os.readlink(f"/proc/{tid}/cwd".encode())
        else:
            base = os.readlink(f"/proc/{tid}/fd/{dirfd}".encode())
    except OSError:
        return None
    if not base.startswith(b"/"):
        return None
    return os.path.normpath(base + b"/" + path)
