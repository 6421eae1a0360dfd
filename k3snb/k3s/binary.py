"""Find, install and identify the k3s binary.

Discovery order: ``$K3SNB_K3S`` → ``k3s`` on ``PATH`` → the kit cache
(``k3snb._paths.cache_dir()/k3s/<version>/k3s``). ``install_k3s(version)`` downloads the official
release asset and checks it against the release's sha256sum file.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._paths import cache_dir
from .._system import program_output
from ..errors import InvalidParameter, K3sBinaryMissing, K3sError

ENV = "K3SNB_K3S"
RELEASES = "https://github.com/k3s-io/k3s/releases/download"
# asset and checksum-file suffix per machine architecture (k3s release naming)
ASSETS = {"amd64": ("k3s", "amd64"), "arm64": ("k3s-arm64", "arm64"), "arm": ("k3s-armhf", "arm")}
_VERSION_RE = re.compile(r"^v\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")
_OUT_RE = re.compile(r"k3s version (v\S+)(?: \((\w+)\))?")
_GO_RE = re.compile(r"go version (go\S+)")


@dataclass(frozen=True)
class K3sVersion:
    """Parsed ``k3s --version``: ``k3s version v1.33.5+k3s1 (8a8e43b3)`` / ``go version go1.24.6``."""

    version: str
    commit: str | None = None
    go: str | None = None
    raw: str = field(default="", compare=False)

    @property
    def kubernetes(self) -> str:
        """The Kubernetes version part (``v1.33.5``)."""
        return re.split(r"[-+]", self.version, maxsplit=1)[0]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "commit": self.commit, "go": self.go, "kubernetes": self.kubernetes}


def parse_version(text: str) -> K3sVersion:
    m = _OUT_RE.search(text)
    if not m:
        raise K3sError(f"cannot parse k3s version from {text.strip()[:200]!r}",
                       hint="is this a k3s binary? `k3s --version` prints 'k3s version v…'")
    g = _GO_RE.search(text)
    return K3sVersion(m.group(1), m.group(2), g.group(1) if g else None, text.strip())


@dataclass(frozen=True)
class K3sBinary:
    """A located k3s executable; ``source`` is how it was found (env, path, cache)."""

    path: Path
    source: str

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def version(self) -> K3sVersion:
        return k3s_version(self.path)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "source": self.source, **self.version.to_dict()}


def k3s_version(path: str | os.PathLike) -> K3sVersion:
    """Run ``k3s --version`` once per (path, mtime, size) and parse it."""
    try:
        rc, out, err = program_output(path, timeout=30)
    except OSError as e:
        raise K3sError(f"could not run {path} --version: {e}", hint="check the binary (chmod +x, architecture)") from e
    if rc != 0:
        raise K3sError(f"{path} --version exited {rc}: {(err or out).strip()[:300]}", hint="check the binary")
    return parse_version(out + "\n" + err)


def _executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def _vkey(v: str) -> tuple:
    nums = [int(x) for x in re.findall(r"\d+", v)]
    return tuple(nums)


def cached_versions() -> list[str]:
    base = cache_dir() / "k3s"
    if not base.is_dir():
        return []
    return sorted((d.name for d in base.iterdir() if _executable(d / "k3s")), key=_vkey)


def find_k3s(version: str | None = None) -> K3sBinary:
    """Locate k3s: ``$K3SNB_K3S``, then ``PATH``, then the kit cache (``version`` picks a cached one).

    Raises:
        K3sBinaryMissing: none of the three places has an executable k3s (the message names all three).
    """
    tried = []
    env = os.environ.get(ENV)
    if env:
        p = Path(env).expanduser()
        if _executable(p):
            return K3sBinary(p.absolute(), "env")
        err = K3sBinaryMissing(f"${ENV}={env} is not an executable file",
                               hint=f"point ${ENV} at the k3s binary, or unset it to search PATH")
        err.searched = [f"${ENV}={env}"]
        raise err
    tried.append(f"${ENV} (unset)")
    if version is None:
        w = shutil.which("k3s")
        if w:
            return K3sBinary(Path(w).absolute(), "path")
        tried.append("k3s on PATH")
    base = cache_dir() / "k3s"
    if version:
        cand = base / version / "k3s"
        if _executable(cand):
            return K3sBinary(cand, "cache")
        tried.append(str(cand))
    else:
        vs = cached_versions()
        if vs:
            return K3sBinary(base / vs[-1] / "k3s", "cache")
        tried.append(f"{base}/<version>/k3s")
    err = K3sBinaryMissing("no k3s binary found; looked at " + "; ".join(tried))
    err.searched = tried  # an attribute, not a field: the message already lists the places once
    raise err


def _arch() -> str:
    m = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(m, "arm")


def _fetch(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "k3snb"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        raise K3sError(f"download failed: HTTP {e.code} for {url}",
                       hint="check the version spelling (e.g. v1.33.5+k3s1)", url=url) from e
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise K3sError(
            f"cannot download k3s (offline?): {reason}",
            hint=f"copy a k3s binary here by hand and set {ENV}=/path/to/k3s, or put k3s on PATH",
            url=url,
        ) from e


def install_k3s(version: str, *, arch: str | None = None, timeout: float = 60.0, force: bool = False) -> K3sBinary:
    """Download the k3s release ``version`` into the kit cache and verify its sha256.

    Raises:
        InvalidParameter: malformed version or unknown arch.
        K3sError: offline, HTTP error, or checksum mismatch (nothing is left in the cache then).
    """
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise InvalidParameter(f"not a k3s version: {version!r}", hint="use a release tag such as v1.33.5+k3s1")
    arch = arch or _arch()
    if arch not in ASSETS:
        raise InvalidParameter(f"unknown arch {arch!r}; valid: {', '.join(ASSETS)}", hint="omit arch to use this machine's")
    dest = cache_dir() / "k3s" / version / "k3s"
    if _executable(dest) and not force:
        return K3sBinary(dest, "cache")
    asset, sumarch = ASSETS[arch]
    tag = urllib.parse.quote(version, safe="")
    sums = _fetch(f"{RELEASES}/{tag}/sha256sum-{sumarch}.txt", timeout).decode()
    want = None
    for line in sums.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == asset:
            want = parts[0].lower()
    if not want:
        raise K3sError(f"no checksum for {asset} in the release's sha256sum-{sumarch}.txt",
                       hint="check the version / arch")
    data = _fetch(f"{RELEASES}/{tag}/{asset}", timeout)
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise K3sError(f"sha256 mismatch for k3s {version}: got {got}, release says {want}",
                       hint="retry the download; do not use this file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(".k3s.partial")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    os.replace(tmp, dest)
    return K3sBinary(dest, "cache")
