"""Offline OCI image archives: ``busybox``, ``pause`` and "a directory → an image", no registry.

Archives are OCI image layouts packed in a tar (``oci-layout``, ``index.json``, ``blobs/sha256``) that
``ctr images import`` and ``umoci`` read. They are written by a small deterministic writer here rather
than by umoci/skopeo: umoci needs an existing layout plus a runtime-spec round trip to add files and
stamps creation times (so digests change on every build), skopeo only copies existing images. Writing
the layout ourselves gives byte-identical archives for identical inputs, so an image's digest is a
content address and the kit cache (``<cache>/images/<name>-<key>.tar``) is keyed by it.

Layers are uncompressed tars (``application/vnd.oci.image.layer.v1.tar``) with zeroed times and
owners. ``pause`` is a tiny static C program compiled with ``gcc -static`` at build time (Debian ships
no pause binary): PID 1 that reaps children and exits 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._paths import cache_dir, need_program
from .._state import tracked_tempdir
from ..errors import InvalidParameter, MissingDependency
from ..report import Rich, render

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Image", "busybox", "pause", "from_dir", "get_image", "load_archive", "BUILTIN", "REF_PREFIX"]

WRITER_VERSION = "2"  # bump when the layout written changes: it is part of every cache key
REF_PREFIX = "k3snb.local/"
EPOCH = "1970-01-01T00:00:00Z"
BUILTIN = ("busybox", "pause")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
# the host's binaries go into the images, so they are images for the host's architecture (GOARCH names:
# containerd refuses an image whose platform does not match)
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(platform.machine(),
                                                                                  platform.machine())

PAUSE_C = r"""
/* k3snb pause: PID 1 of a pod sandbox. Reaps orphans; SIGTERM/SIGINT end it with status 0. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(int argc, char **argv) {
    struct sigaction sa;
    if (argc > 1 && strcmp(argv[1], "-v") == 0) { write(1, "k3snb-pause 1\n", 14); return 0; }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;) pause();
    return 0;
}
"""


@dataclass(repr=False)
class Image(Rich):
    """One OCI image archive in the kit cache."""

    name: str
    ref: str
    archive: Path
    digest: str  # manifest digest: the image's content address
    config: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    _title_text = "OCI image"

    @property
    def size(self) -> int:
        return self.archive.stat().st_size

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "ref": self.ref, "digest": self.digest[:19], "layers": len(self.layers),
                "archive_bytes": self.size, "cmd": " ".join(self.config.get("config", {}).get("Cmd") or [])}

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([{**self.summary(), "digest": self.digest}])

    def _repr_html_(self) -> str:
        return render(f"image {self.ref}", self.summary(), [("config", self.config.get("config", {}))],
                      text=self._repr_text())


# -- the writer ---------------------------------------------------------------------------------
def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.linkname = kind, mode, size, linkname
    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
    return ti


def _layer(entries: Iterable[tuple[str, str, Any]]) -> bytes:
    """An uncompressed layer tar from ``(path, kind, payload)``: kind dir (payload=mode), file
    (payload=(bytes, mode)), symlink (payload=target). Sorted, zero times: identical input → identical bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, kind, payload in sorted(entries, key=lambda e: e[0]):
            if kind == "dir":
                tf.addfile(_tarinfo(path, tarfile.DIRTYPE, payload))
            elif kind == "symlink":
                tf.addfile(_tarinfo(path, tarfile.SYMTYPE, 0o777, linkname=payload))
            else:
                data, mode = payload
                tf.addfile(_tarinfo(path, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    return buf.getvalue()


def _write_archive(dest: Path, name: str, layers: Sequence[bytes], cfg: dict[str, Any]) -> None:
    """Pack an OCI layout (one manifest, ``layers`` bottom first) into the tar ``dest`` atomically."""
    blobs: dict[str, bytes] = {}
    descs = []
    for data in layers:
        d = _sha(data)
        blobs[d] = data
        descs.append({"mediaType": MT_LAYER, "digest": d, "size": len(data)})
    config = {"architecture": ARCH, "os": "linux", "config": cfg,
              "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in descs]},
              # fixed epoch times: umoci needs "created", digests must not change between builds
              "created": EPOCH, "history": [{"created": EPOCH, "created_by": f"k3snb.images {name}"} for _ in descs]}
    cbytes = _canon(config)
    blobs[_sha(cbytes)] = cbytes
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
                "config": {"mediaType": MT_CONFIG, "digest": _sha(cbytes), "size": len(cbytes)}, "layers": descs}
    mbytes = _canon(manifest)
    blobs[_sha(mbytes)] = mbytes
    ref = REF_PREFIX + name + ":latest"
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [{
        "mediaType": MT_MANIFEST, "digest": _sha(mbytes), "size": len(mbytes),
        "platform": {"architecture": ARCH, "os": "linux"},
        # containerd names the imported image from the first, umoci/skopeo look at the second
        "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": "latest"}}]}
    files = {"oci-layout": _canon({"imageLayoutVersion": "1.0.0"}), "index.json": _canon(index)}
    files.update({f"blobs/sha256/{d.split(':', 1)[1]}": b for d, b in blobs.items()})
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for d in ("blobs", "blobs/sha256"):
                tf.addfile(_tarinfo(d, tarfile.DIRTYPE, 0o755))
            for path in sorted(files):
                tf.addfile(_tarinfo(path, tarfile.REGTYPE, 0o644, len(files[path])), io.BytesIO(files[path]))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)  # concurrent builders of the same key write identical bytes
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _images_dir() -> Path:
    d = cache_dir() / "images"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cached(name: str, key_parts: Sequence[bytes | str], build) -> Image:
    h = hashlib.sha256(WRITER_VERSION.encode())
    for p in key_parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    dest = _images_dir() / f"{name}-{h.hexdigest()[:16]}.tar"
    if not dest.exists():
        build(dest)
    return load_archive(dest, name=name)


def _base_entries() -> list[tuple[str, str, Any]]:
    ents: list[tuple[str, str, Any]] = [(d, "dir", 0o755) for d in
                                        ("bin", "dev", "etc", "proc", "root", "sys", "usr", "usr/bin", "var")]
    ents += [("tmp", "dir", 0o1777)]
    ents += [("etc/passwd", "file", (b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
                                     0o644)),
             ("etc/group", "file", (b"root:x:0:\nnogroup:x:65534:\n", 0o644)),
             ("etc/hosts", "file", (b"127.0.0.1 localhost\n", 0o644))]
    return ents


def _which(prog: str, pkg: str) -> str:
    return os.path.realpath(need_program(prog, pkg))  # the real file: busybox's applet links point at it


def _run(argv: list[str], pkg: str, timeout: float = 30) -> subprocess.CompletedProcess:
    # a host tool that hangs or cannot start is a broken install: one error naming the package
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MissingDependency(f"{' '.join(argv[:2])} failed: {e}", hint=f"(re)install {pkg}") from None


def _busybox_applets(bb: str) -> list[str]:
    out = _run([bb, "--list"], "busybox-static").stdout.split()
    return sorted(a for a in out if a and "/" not in a and a != "busybox")


# -- public builders ----------------------------------------------------------------------------
def busybox() -> Image:
    """``k3snb.local/busybox:latest`` from the host's busybox-static, every applet a symlink in /bin."""
    bb = _which("busybox", "busybox-static")
    data = Path(bb).read_bytes()
    out = _run(["file", "-b", bb], "file").stdout if shutil.which("file") else ""
    if out and "statically linked" not in out:
        raise MissingDependency(f"{bb} is not statically linked", hint="apt-get install busybox-static")
    applets = _busybox_applets(bb)

    def build(dest: Path) -> None:
        ents = _base_entries() + [("bin/busybox", "file", (data, 0o755))]
        ents += [(f"bin/{a}", "symlink", "busybox") for a in applets]
        _write_archive(dest, "busybox", [_layer(ents)],
                       {"Env": [DEFAULT_PATH], "Cmd": ["sh"], "WorkingDir": "/"})

    return _cached("busybox", [data, "\n".join(applets)], build)


def _compile_pause(workdir: Path) -> bytes:
    gcc = _which("gcc", "gcc libc6-dev")
    src = workdir / "pause.c"
    src.write_text(PAUSE_C)
    out = workdir / "pause"
    res = _run([gcc, "-static", "-Os", "-s", "-o", str(out), str(src)], "gcc libc6-dev", timeout=120)
    if res.returncode != 0:
        raise MissingDependency(f"cannot compile the pause binary: {res.stderr.strip()[-300:]}",
                                hint="apt-get install gcc libc6-dev (static libc is in libc6-dev)")
    return out.read_bytes()


def pause() -> Image:
    """``k3snb.local/pause:latest``: a static pause (reaps children, exits 0 on SIGTERM/SIGINT) as /pause."""
    # keyed by the source and compiler, not the binary: gcc output is not byte-reproducible everywhere
    gcc = _which("gcc", "gcc libc6-dev")
    gcc_v = _run([gcc, "--version"], "gcc").stdout.splitlines()[:1]

    def build(dest: Path) -> None:
        # tagged and recorded: after kill -9, `k3snb doctor --clean` removes it
        with tracked_tempdir("pause") as td:
            binary = _compile_pause(td)
        ents = _base_entries() + [("pause", "file", (binary, 0o755))]
        _write_archive(dest, "pause", [_layer(ents)], {"Env": [DEFAULT_PATH], "Entrypoint": ["/pause"],
                                                       "WorkingDir": "/"})

    return _cached("pause", [PAUSE_C, *gcc_v], build)


def _raise(err: OSError) -> None:
    raise err


def _dir_entries(root: Path) -> list[tuple[str, str, Any]]:
    ents: list[tuple[str, str, Any]] = []
    # onerror: an unreadable subdirectory must fail the build, not silently drop out of the image
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        rel = os.path.relpath(dirpath, root)
        for n in sorted(dirnames) + sorted(filenames):
            p = Path(dirpath) / n
            arc = n if rel == "." else f"{rel}/{n}"
            st = p.lstat()
            if p.is_symlink():
                ents.append((arc, "symlink", os.readlink(p)))
            elif p.is_dir():
                ents.append((arc, "dir", st.st_mode & 0o7777))
            elif p.is_file():
                ents.append((arc, "file", (p.read_bytes(), st.st_mode & 0o7777)))
            # sockets, fifos and devices are not image content: skipped
    return ents


def from_dir(path: str | os.PathLike, name: str, *, cmd: Sequence[str] | None = None,
             env: Sequence[str] | None = None, base: str | None = None) -> Image:
    """An image whose root filesystem is the directory ``path`` (times and owners dropped).

    ``base="busybox"`` puts the busybox layer underneath, so a directory of scripts gets a shell.
    """
    root = Path(path)
    if not root.is_dir():
        raise InvalidParameter(f"{root} is not a directory", hint="pass the directory to turn into an image root")
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name in BUILTIN:
        raise InvalidParameter(f"bad image name {name!r}",
                               hint="use letters, digits, '-', '_' or '.', and not busybox/pause")
    try:
        layer = _layer(_dir_entries(root))
    except OSError as e:
        raise InvalidParameter(f"cannot read {e.filename or root} for image {name!r}: {e.strerror or e}",
                               hint="make every file under the directory readable (or run as its owner)") from e
    lower: list[bytes] = []
    if base is not None:
        if base != "busybox":
            raise InvalidParameter(f"unknown base {base!r}", hint="base=None or base='busybox'")
        bimg = busybox()
        lower = [_blob(bimg.archive, d["digest"]) for d in bimg.layers]
    cfg = {"Env": list(env or [DEFAULT_PATH]), "WorkingDir": "/"}
    if cmd:
        cfg["Cmd"] = list(cmd)
    key = [_sha(b) for b in lower] + [_sha(layer), _canon(cfg).decode()]
    return _cached(name, key, lambda dest: _write_archive(dest, name, [*lower, layer], cfg))


def _blob(archive: Path, digest: str) -> bytes:
    with tarfile.open(archive) as tf:
        f = tf.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}")
        if f is None:  # load_archive verified the blob exists: only a changed cache file gets here
            raise InvalidParameter(f"{archive}: blob {digest} is not a regular file",
                                   hint=f"remove {archive}; it is rebuilt on next use")
        return f.read()


def load_archive(path: str | os.PathLike, *, name: str | None = None) -> Image:
    """Read and verify an OCI archive (layout, index, manifest, config, blob digests)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidParameter(f"image archive {p} not found",
                               hint="pass busybox, pause, or the path of an OCI image archive (.tar)")
    try:
        with tarfile.open(p) as tf:
            def read(n: str) -> bytes:
                f = tf.extractfile(n)
                if f is None:
                    raise KeyError(n)
                return f.read()

            if json.loads(read("oci-layout")).get("imageLayoutVersion") != "1.0.0":
                raise ValueError("unsupported imageLayoutVersion")
            index = json.loads(read("index.json"))
            mdesc = index["manifests"][0]
            mbytes = read(f"blobs/sha256/{mdesc['digest'].split(':', 1)[1]}")
            if _sha(mbytes) != mdesc["digest"]:
                raise ValueError(f"manifest digest mismatch ({mdesc['digest']})")
            manifest = json.loads(mbytes)
            cbytes = read(f"blobs/sha256/{manifest['config']['digest'].split(':', 1)[1]}")
            if _sha(cbytes) != manifest["config"]["digest"]:
                raise ValueError("config digest mismatch")
            names = set(tf.getnames())
            for d in manifest["layers"]:
                if f"blobs/sha256/{d['digest'].split(':', 1)[1]}" not in names:
                    raise ValueError(f"layer blob {d['digest']} missing")
    except (tarfile.TarError, KeyError, ValueError, IndexError, TypeError, OSError, EOFError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidParameter(f"{p} is not a valid OCI image archive ({why})",
                               hint="rebuild it (k3snb.images.from_dir) or export it as an OCI archive "
                               "(index.json, oci-layout, blobs/sha256)") from None
    ann = mdesc.get("annotations") or {}
    ref = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name") or ""
    return Image(name or ref.rsplit("/", 1)[-1].split(":")[0] or p.stem, ref, p, mdesc["digest"],
                 json.loads(cbytes), list(manifest["layers"]))


def get_image(spec: str | os.PathLike | Image) -> Image:
    """``busybox`` / ``pause`` (built and cached on first use), a path to an OCI archive, or an Image."""
    if isinstance(spec, Image):
        return spec
    s = str(spec)
    if s == "busybox":
        return busybox()
    if s == "pause":
        return pause()
    if os.sep not in s and not s.endswith(".tar") and not Path(s).exists():
        raise InvalidParameter(f"unknown image {s!r}", hint="use busybox, pause, or a path to an OCI archive")
    return load_archive(s)
