"""Build the small demo programs of experiments 09/24 and the tests from their shipped sources.

* :func:`build_preload` — an LD_PRELOAD shim (gcc, ``data/demos/preload.c``) that rewrites one path
  prefix in libc's ``open``/``openat``/``fopen`` family, the way the seed research's Exp 09 did.
* :func:`build_static_go` — a statically linked Go program (``data/demos/goread.go``) that prints a
  file's contents, the way runc/k3s/containerd read /proc/sys: raw syscalls, no libc, so
  LD_PRELOAD cannot see them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import MissingDependency


def demo_source(name: str) -> str:
    """The text of a demo program shipped as package data (``k3snb/data/demos/NAME``)."""
    from importlib import resources

    return resources.files("k3snb").joinpath(f"data/demos/{name}").read_text()


def build_preload(dest: str | os.PathLike) -> Path:
    """Compile the LD_PRELOAD shim into ``dest/k3snb_preload.so`` (needs gcc)."""
    gcc = shutil.which("gcc")
    if not gcc:
        raise MissingDependency("gcc not found", hint="apt-get install gcc")
    d = Path(dest)
    d.mkdir(parents=True, exist_ok=True)
    src = d / "k3snb_preload.c"
    src.write_text(demo_source("preload.c"))
    out = d / "k3snb_preload.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(out), str(src), "-ldl"], check=True,
                   capture_output=True)
    return out


def build_static_go(dest: str | os.PathLike) -> Path:
    """Build the static Go reader into ``dest/goread`` (needs the Go toolchain, offline is fine)."""
    go = shutil.which("go")
    if not go:
        raise MissingDependency("the Go toolchain is not installed", hint="apt-get install golang-go")
    d = Path(dest)
    d.mkdir(parents=True, exist_ok=True)
    (d / "main.go").write_text(demo_source("goread.go"))
    out = d / "goread"
    env = {**os.environ, "CGO_ENABLED": "0", "GOCACHE": str(d / ".gocache"), "GOPATH": str(d / ".gopath"),
           "GO111MODULE": "off", "GOTOOLCHAIN": "local", "HOME": str(d)}
    r = subprocess.run([go, "build", "-o", str(out), str(d / "main.go")], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise MissingDependency(f"go build failed: {r.stderr.strip()[:400]}", hint="check the Go toolchain")
    shutil.rmtree(d / ".gocache", ignore_errors=True)
    return out


def is_static(path: str | os.PathLike) -> bool:
    """True when the ELF file has no PT_INTERP (no dynamic loader, so LD_PRELOAD is never read)."""
    import struct

    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            raise ValueError(f"{path} is not a 64-bit ELF file")
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))  # 3 = PT_INTERP
