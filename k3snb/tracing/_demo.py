"""Small programs built at run time for experiments 09/24 and the tests.

* :func:`build_preload` — an LD_PRELOAD shim (gcc) that rewrites one path prefix in libc's
  ``open``/``openat``/``fopen``/``stat`` family, the way the seed research's Exp 09 did.
* :func:`build_static_go` — a statically linked Go program that prints a file's contents, the way
  runc/k3s/containerd read /proc/sys: raw syscalls, no libc, so LD_PRELOAD cannot see them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import MissingDependency

PRELOAD_C = r"""
/* k3snb LD_PRELOAD path shim: K3SNB_FROM=/prefix K3SNB_TO=/other rewrites paths in libc calls. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *map(const char *p, char *buf, size_t n) {
    const char *from = getenv("K3SNB_FROM"), *to = getenv("K3SNB_TO");
    if (!p || !from || !to) return p;
    size_t lf = strlen(from);
    if (strncmp(p, from, lf) != 0) return p;
    if (snprintf(buf, n, "%s%s", to, p + lf) >= (int)n) return p;
    return buf;
}

#define MODE_ARG(flags) mode_t mode = 0; \
    if ((flags) & (O_CREAT | O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, int); va_end(ap); }

int open(const char *p, int flags, ...) {
    char b[4096]; MODE_ARG(flags);
    int (*real)(const char *, int, ...) = dlsym(RTLD_NEXT, "open");
    return real(map(p, b, sizeof b), flags, mode);
}
int open64(const char *p, int flags, ...) {
    char b[4096]; MODE_ARG(flags);
    int (*real)(const char *, int, ...) = dlsym(RTLD_NEXT, "open64");
    return real(map(p, b, sizeof b), flags, mode);
}
int openat(int d, const char *p, int flags, ...) {
    char b[4096]; MODE_ARG(flags);
    int (*real)(int, const char *, int, ...) = dlsym(RTLD_NEXT, "openat");
    return real(d, map(p, b, sizeof b), flags, mode);
}
int openat64(int d, const char *p, int flags, ...) {
    char b[4096]; MODE_ARG(flags);
    int (*real)(int, const char *, int, ...) = dlsym(RTLD_NEXT, "openat64");
    return real(d, map(p, b, sizeof b), flags, mode);
}
FILE *fopen(const char *p, const char *m) {
    char b[4096];
    FILE *(*real)(const char *, const char *) = dlsym(RTLD_NEXT, "fopen");
    return real(map(p, b, sizeof b), m);
}
FILE *fopen64(const char *p, const char *m) {
    char b[4096];
    FILE *(*real)(const char *, const char *) = dlsym(RTLD_NEXT, "fopen64");
    return real(map(p, b, sizeof b), m);
}
"""

GO_MAIN = r"""
// k3snb static Go reader: prints the contents of each file argument, like runc reading /proc/sys.
package main

import (
	"fmt"
	"os"
)

func main() {
	code := 0
	for _, p := range os.Args[1:] {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
			continue
		}
		fmt.Print(string(b))
	}
	os.Exit(code)
}
"""


def build_preload(dest: str | os.PathLike) -> Path:
    """Compile the LD_PRELOAD shim into ``dest/k3snb_preload.so`` (needs gcc)."""
    gcc = shutil.which("gcc")
    if not gcc:
        raise MissingDependency("gcc not found", hint="apt-get install gcc")
    d = Path(dest)
    d.mkdir(parents=True, exist_ok=True)
    src = d / "k3snb_preload.c"
    src.write_text(PRELOAD_C)
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
    (d / "main.go").write_text(GO_MAIN)
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
