"""Which runsc builds exist here: discovery, version parsing, and fetching the 2024 build.

* ``"2022"`` is the system runsc (Debian 12's ``0.0~20221219``), found at ``/usr/bin/runsc`` or on PATH.
* ``"2024"`` is Debian 13's ``0.0~20240729``, extracted into ``cache_dir()/runsc/20240729/runsc`` by
  :func:`fetch_runsc_2024` (``python -m k3snb.runners.runsc fetch``), which reuses the machine's own
  Debian mirror with private apt state, so the system apt configuration is never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._paths import cache_dir, tmp_root
from .._system import program_output
from ..errors import InvalidParameter, RunscMissing
from ..report import Table

VERSIONS = {"2022": "20221219", "2024": "20240729"}
_SYSTEM_CANDIDATES = ("/usr/bin/runsc", "/usr/local/bin/runsc", "/usr/sbin/runsc")
_FETCH_HINT = "run `python -m k3snb.runners.runsc fetch` (or `make setup`) to fetch the 2024 build"


def cached_runsc_path(version: str = "2024") -> Path:
    """Where the kit keeps a fetched runsc build (it may not exist yet)."""
    return cache_dir() / "runsc" / VERSIONS[version] / "runsc"


def _system_runsc() -> Path | None:
    found = shutil.which("runsc")
    if found:
        return Path(found)
    for c in _SYSTEM_CANDIDATES:
        if os.access(c, os.X_OK):
            return Path(c)
    return None


def find_runsc(version: str | os.PathLike | None = None) -> Path:
    """Return the path of a runsc build.

    Args:
        version: ``"2022"`` (system build), ``"2024"`` (kit cache), a path to a runsc binary, or
            None for the system default.

    Raises:
        RunscMissing: the requested build is not installed (hint says how to get it).
        InvalidParameter: ``version`` is neither a known build name nor a path.
    """
    if version is None or version == "2022":
        p = _system_runsc()
        if p is None:
            raise RunscMissing("no system runsc found (looked on PATH and in /usr/bin)")
        return p
    if isinstance(version, os.PathLike) or "/" in str(version):
        p = Path(version)
        if not p.is_file():
            raise RunscMissing(f"runsc path {str(p)!r} does not exist",
                               hint="pass an existing runsc binary, or runsc='2022' / '2024'")
        with open(p, "rb") as f:
            head = f.read(4)
        elf = head == b"\x7fELF" or head.startswith(b"#!")  # a program (or a wrapper script)
        if not elf or not os.access(p, os.X_OK) or "runsc version" not in runsc_version_text(p):
            # only a real runsc binary that lacks its x bit gets the chmod hint, never e.g. /etc/passwd
            why = ("is not a runsc binary (not an executable program)" if not elf else
                   "is not executable" if not os.access(p, os.X_OK) else
                   "is not a runsc binary (its --version does not say 'runsc version')")
            raise RunscMissing(f"runsc path {str(p)!r} {why}",
                               hint=f"chmod +x {p}" if elf and not os.access(p, os.X_OK) else
                               "pass the path of a gVisor runsc binary, or runsc='2022' (system) / '2024' (kit cache)")
        return p
    if version == "2024":
        p = cached_runsc_path("2024")
        if not p.is_file():
            raise RunscMissing(f"the 2024 runsc build is not in the kit cache ({p})", hint=_FETCH_HINT)
        return p
    raise InvalidParameter(
        f"unknown runsc version {version!r}; valid: '2022', '2024', a path, or None",
        hint="pass runsc='2022' (system), runsc='2024' (kit cache) or runsc='/path/to/runsc'",
    )


def runsc_version(path: str | os.PathLike) -> str:
    """Parse ``runsc --version`` (e.g. ``"0.0~20221219.0"``); ``"unknown"`` if it cannot be run."""
    m = re.search(r"runsc version (\S+)", runsc_version_text(path))
    return m.group(1) if m else "unknown"


def runsc_version_text(path: str | os.PathLike) -> str:
    """The whole ``runsc --version`` output (version and OCI spec lines), stripped; "" if it cannot run."""
    try:
        return program_output(path, timeout=15)[1].strip()  # asked once per binary
    except OSError:
        return ""


def runsc_provenance(version: str = "2024") -> dict[str, Any]:
    """Which Debian package a fetched build came from (``package``, ``version``, ``suite``); {} if unknown.

    The mirror URI is left out: it names the machine's configuration, not the build.
    """
    f = cached_runsc_path(version).parent / "provenance.json"
    try:
        doc = json.loads(f.read_text())
    except (OSError, ValueError):
        return {}
    return {k: doc[k] for k in ("package", "version", "suite") if k in doc}


# -- fetching the 2024 build --------------------------------------------------------------------


@dataclass
class _Source:
    uri: str
    suites: list[str]
    components: list[str]
    signed_by: str | None


def _parse_deb822(text: str) -> list[_Source]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and key:  # continuation line
                fields[key] += "\n" + line.strip()
                continue
            if ":" in line:
                key, _, val = line.partition(":")
                key = key.strip().lower()
                fields[key] = val.strip()
        if not fields or fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        for uri in fields.get("uris", "").split():
            out.append(_Source(uri, fields.get("suites", "").split(), fields.get("components", "").split(),
                               fields.get("signed-by") or None))
    return out


def _parse_one_line(text: str) -> list[_Source]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)\s*(?P<comps>.*)", line)
        if not m:
            continue
        opts = dict(o.split("=", 1) for o in (m.group("opts") or "").split() if "=" in o)
        out.append(_Source(m.group("uri"), [m.group("suite")], m.group("comps").split(), opts.get("signed-by")))
    return out


def apt_sources(etc: str | os.PathLike = "/etc/apt") -> list[_Source]:
    """All enabled ``deb`` sources of the machine's apt configuration (deb822 and one-line)."""
    etc = Path(etc)
    found: list[_Source] = []
    for f in sorted((etc / "sources.list.d").glob("*.sources")):
        with contextlib.suppress(OSError):
            found += _parse_deb822(f.read_text())
    for f in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        with contextlib.suppress(OSError):
            found += _parse_one_line(f.read_text())
    return found


_DEBIAN_SUITES = {"buster", "bullseye", "bookworm", "trixie", "forky", "sid", "stable", "testing", "unstable",
                  "oldstable"}


def debian_mirror(etc: str | os.PathLike = "/etc/apt") -> _Source | None:
    """The machine's configured main Debian archive (not security, not third-party repos)."""
    for s in apt_sources(etc):
        if "security" in s.uri or "main" not in s.components:
            continue
        if any(suite.split("-")[0] in _DEBIAN_SUITES and "-" not in suite for suite in s.suites):
            return s
    return None


def _run(argv: list[str], timeout: float, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def fetch_runsc_2024(*, force: bool = False, quiet: bool = False, etc: str | os.PathLike = "/etc/apt") -> Path:
    """Fetch Debian 13's runsc (0.0~20240729) into the kit cache and return its path.

    Uses the machine's configured Debian mirror with a temporary ``trixie`` sources list and
    private apt lists/archives dirs; nothing in the system apt configuration changes. Idempotent.

    Raises:
        RunscMissing: the package could not be had (offline, no Debian mirror configured …).
    """
    dest = cached_runsc_path("2024")
    if dest.is_file() and not force and runsc_version(dest) != "unknown":
        return dest
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise RunscMissing("apt-get/dpkg-deb not available, cannot fetch the 2024 runsc build",
                           hint="copy a runsc binary to " + str(dest) + " or pass runsc=PATH")
    src = debian_mirror(etc)
    if src is None:
        raise RunscMissing(f"no Debian mirror found in {etc}/sources.list(.d)",
                           hint="copy a runsc 20240729 binary to " + str(dest) + " or pass runsc=PATH")
    keyring = src.signed_by if src.signed_by and "\n" not in src.signed_by else None
    keyring = keyring or "/usr/share/keyrings/debian-archive-keyring.gpg"

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="k3snb-aptfetch-", dir=tmp_root()) as tmp:
        t = Path(tmp)
        for d in ("lists/partial", "archives/partial", "parts", "prefs"):
            (t / d).mkdir(parents=True)
        (t / "sources.list").write_text(f"deb [signed-by={keyring}] {src.uri} trixie main\n")
        apt_opts = [
            "-o", f"Dir::Etc::SourceList={t / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={t / 'parts'}",
            "-o", f"Dir::Etc::PreferencesParts={t / 'prefs'}",
            "-o", f"Dir::State::Lists={t / 'lists'}",
            "-o", f"Dir::Cache::Archives={t / 'archives'}",
            "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
            # private dirs are root-owned; apt's _apt sandbox user could not write them
            "-o", "APT::Sandbox::User=root",
            "-o", "Acquire::Languages=none",
            "-q",
        ]
        say(f"fetching runsc (trixie) via the configured mirror {src.uri} ...")
        try:
            r = _run(["apt-get", *apt_opts, "update"], timeout=600)
            if r.returncode != 0:
                raise RunscMissing("apt-get update for the trixie suite failed",
                                   hint="check network access to the Debian mirror", stderr=r.stderr[-800:])
            r = _run(["apt-get", *apt_opts, "download", "runsc"], timeout=600, cwd=tmp)
            debs = sorted(t.glob("runsc_*.deb"))
            if r.returncode != 0 or not debs:
                raise RunscMissing("apt-get download runsc (trixie) failed",
                                   hint="check network access to the Debian mirror", stderr=r.stderr[-800:])
            x = t / "x"
            r = _run(["dpkg-deb", "-x", str(debs[0]), str(x)], timeout=120)
            pkgver = _run(["dpkg-deb", "-f", str(debs[0]), "Version"], timeout=30).stdout.strip()
        except subprocess.TimeoutExpired as e:
            raise RunscMissing(f"fetching runsc timed out ({e.cmd[0]} {e.cmd[-1]})",
                               hint="check network access to the Debian mirror") from None
        binary = next((p for p in (x / "usr/bin/runsc", x / "usr/sbin/runsc") if p.is_file()), None)
        if binary is None:
            raise RunscMissing(f"{debs[0].name} contains no usr/bin/runsc")
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_suffix(".part")
        shutil.copy2(binary, part)
        part.chmod(0o755)
        os.replace(part, dest)
        (dest.parent / "provenance.json").write_text(json.dumps(
            {"package": debs[0].name, "version": pkgver, "suite": "trixie", "mirror": src.uri}, indent=1))
    say(f"runsc {runsc_version(dest)} -> {dest}")
    return dest


# -- overview -----------------------------------------------------------------------------------


class RunscBuilds(Table):
    """Rich table of the runsc builds this machine has."""

    _title_text = "runsc builds"
    _key = "build"
    _columns = ("build", "path", "version", "available")
    _section = "builds"

    def summary(self) -> dict[str, Any]:
        return {"available": sum(r["available"] for r in self.rows), "builds": len(self.rows)}

    def _repr_text(self) -> str:
        lines = [f"{r['build']:6} {r['version'] or '-':20} {r['path'] or '(missing)'}" for r in self.rows]
        return "<RunscBuilds\n  " + "\n  ".join(lines) + ">"

def list_runsc_builds() -> RunscBuilds:
    """Table of the runsc builds the kit can use (``2022``, ``2024``) with path and version."""
    rows = []
    for name in ("2022", "2024"):
        try:
            p = find_runsc(name)
            rows.append({"build": name, "path": str(p), "version": runsc_version(p), "available": True})
        except RunscMissing:
            rows.append({"build": name, "path": None, "version": None, "available": False})
    return RunscBuilds(rows)



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m k3snb.runners.runsc", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="fetch the 2024 runsc build into the kit cache (idempotent)")
    f.add_argument("--force", action="store_true", help="fetch again even if present")
    f.add_argument("--strict", action="store_true", help="exit 1 when it cannot be had")
    sub.add_parser("list", help="show available builds")
    a = ap.parse_args(argv)
    if a.cmd == "list":
        print(repr(list_runsc_builds()))
        return 0
    try:
        p = fetch_runsc_2024(force=a.force)
        print(f"runsc 2024: {p} ({runsc_version(p)})")
        return 0
    except RunscMissing as e:
        # setup carries on with the system runsc; the 2024 tests then skip with a reason
        print(f"warning: {e}\n  carrying on with the system runsc", file=sys.stderr)
        return 1 if a.strict else 0


if __name__ == "__main__":
    sys.exit(main())
