"""Helpers shared by the tests (pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def procs_with(needle: str | bytes, argv0_suffixes: tuple[bytes, ...] = ()) -> list[int]:
    """Pids whose command line contains ``needle`` (and, if given, whose argv[0] ends with a suffix)."""
    marker = needle.encode() if isinstance(needle, str) else needle
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmd and (not argv0_suffixes or cmd.split(b"\0", 1)[0].endswith(argv0_suffixes)):
            out.append(int(d))
    return out


RUNSC = (b"runsc", b"runsc-sandbox", b"runsc-gofer")


def host_version(prog: str) -> str:
    """A program's version read here by the test itself, to compare with what a run recorded."""
    out = subprocess.run([prog, "--version"], capture_output=True, text=True, timeout=30).stdout
    # "runc version 1.1.5+ds1", "crun version 1.8.1", "containerd github.com/containerd/containerd 1.6.20~ds1 …"
    words = out.split()
    return words[2].removeprefix("v") if words[:1] == ["containerd"] else words[words.index("version") + 1]
