"""The fake CNI plugin: ``install_cni(bin_dir, conf_dir)`` writes the plugin program (and aliases
such as ``host-local`` that k3s looks up) plus a conflist referencing it; ``call_plugin`` drives it
by the CNI protocol (env vars + stdin), as a runtime would.

Design of the plugin (``k3snb.cni.plugin``): spec 0.3.0–1.1.0, addresses from ``ipam.ranges`` (or a
plain ``subnet``) stored per network in ``<dataDir>/<network>.json`` under an fcntl lock, stable per
(container id, ifname); no interface is created (gVisor lacks the netlink features real plugins need).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter, UsageError
from ..report import Rich
from .conflist import make_conflist, write_conflist

__all__ = ["install_cni", "call_plugin", "CniInstall", "CniReply", "make_conflist", "write_conflist"]

MARKER = "# k3snb-cni-plugin"
_KIT_ROOT = str(Path(__file__).resolve().parents[2])


def _script(python: str) -> str:
    # the kit's root goes on sys.path so the plugin works even when k3snb is not installed
    return (
        f"#!{python}\n{MARKER} (written by k3snb.install_cni; regenerate, do not edit)\n"
        f"import sys\nsys.path.insert(0, {_KIT_ROOT!r})\n"
        "from k3snb.cni.plugin import main\nsys.exit(main())\n"
    )


def is_ours(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as f:
            return MARKER.encode() in f.read(512)
    except OSError:
        return False


@dataclass(repr=False)
class CniInstall(Rich):
    """What ``install_cni`` wrote; ``uninstall()`` removes exactly that."""

    bin_dir: Path
    conf_dir: Path
    conflist: Path
    programs: list[Path]
    data_dir: Path
    network: str
    subnet: str
    config: dict[str, Any] = field(default_factory=dict)
    _title_text = "k3snb fake CNI"

    def summary(self) -> dict[str, Any]:
        return {"network": self.network, "subnet": self.subnet, "conflist": str(self.conflist)}

    def to_frame(self):
        import pandas as pd

        rows = [{"kind": "program", "path": str(p)} for p in self.programs]
        rows += [{"kind": "conflist", "path": str(self.conflist)}, {"kind": "data_dir", "path": str(self.data_dir)}]
        return pd.DataFrame(rows)

    def allocations(self, network: str | None = None) -> dict[str, dict]:
        """Current address allocations (``"<container id>/<ifname>" -> {...}``) of ``network``
        (default: the installed conflist's network)."""
        from ._ipam import Store

        p = Store(self.data_dir, network or self.network).path
        return json.loads(p.read_text()).get("allocations", {}) if p.exists() else {}

    def calls(self) -> list[dict]:
        """Every plugin invocation recorded in ``<data_dir>/calls.jsonl`` (evidence a runtime called us)."""
        p = self.data_dir / "calls.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines() if line] if p.exists() else []

    def uninstall(self) -> None:
        for p in [*self.programs, self.conflist]:
            if p.exists() and (p == self.conflist or is_ours(p)):
                p.unlink()


def install_cni(
    bin_dir: str | os.PathLike,
    conf_dir: str | os.PathLike,
    names: tuple[str, ...] | list[str] = ("k3snb",),
    aliases: tuple[str, ...] | list[str] = (),
    subnet: str = "10.88.0.0/16",
    network: str = "k3snb",
    data_dir: str | os.PathLike | None = None,
    cni_version: str = "1.0.0",
    python: str | None = None,
    force: bool = False,
) -> CniInstall:
    """Install the plugin program as each of ``names`` and ``aliases`` in ``bin_dir`` and a conflist
    for network ``network`` (type ``names[0]``) in ``conf_dir``.

    ``aliases`` are extra copies for name lookups (k3s resolves ``host-local`` on PATH). Files are
    copies, not symlinks (research W4). An existing program that the kit did not write is only
    replaced with ``force=True``. ``data_dir`` (default ``<bin_dir>/../k3snb-cni-state``) holds the
    allocation state and the call log.
    """
    if not names:
        raise InvalidParameter("names is empty", hint="pass at least one plugin name, e.g. names=('k3snb',)")
    for n in [*names, *aliases]:
        if not n or "/" in n or n.startswith("."):
            raise InvalidParameter(f"invalid plugin name {n!r}", hint="use a plain file name such as 'host-local'")
    bdir, cdir = Path(bin_dir).absolute(), Path(conf_dir).absolute()
    for d, what in ((bdir, "bin_dir"), (cdir, "conf_dir")):
        if d.exists() and not d.is_dir():
            raise InvalidParameter(f"{what} {d} exists and is not a directory", hint=f"pass a directory as {what}")
    ddir = Path(data_dir) if data_dir else bdir.parent / "k3snb-cni-state"
    conf = make_conflist(network=network, plugin=names[0], subnet=subnet, data_dir=ddir, cni_version=cni_version)
    targets = [bdir / n for n in dict.fromkeys([*names, *aliases])]
    for t in targets:
        if t.exists() and not is_ours(t) and not force:
            raise UsageError(
                f"{t} exists and was not written by k3snb",
                hint="choose another bin_dir, remove the file, or pass force=True (--force) to replace it",
            )
    new_bdir = not bdir.exists()
    py = python or sys.executable
    if not py or any(c.isspace() for c in py):
        # a shebang line cannot carry an interpreter path with spaces
        raise InvalidParameter(f"interpreter path {py!r} is empty or has whitespace",
                               hint="pass python=/path/without/spaces (e.g. a venv symlink)")
    text = _script(py)
    made = [t for t in targets if not t.exists()]
    try:
        bdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create bin_dir {bdir}: {e.strerror}", hint="pass a writable plugin directory") from None
    try:
        for t in targets:
            tmp = t.with_name(f".{t.name}.k3snb-tmp")
            try:
                tmp.write_text(text)
                tmp.chmod(0o755)
                os.replace(tmp, t)
            finally:
                tmp.unlink(missing_ok=True)
        path = write_conflist(cdir, conf)
    except BaseException:  # no half-installed plugin: remove the programs this call created
        for t in made:
            t.unlink(missing_ok=True)
        if new_bdir:
            with contextlib.suppress(OSError):
                bdir.rmdir()
        if isinstance(sys.exc_info()[1], OSError):  # one clear error, after the rollback above
            e = sys.exc_info()[1]
            raise UsageError(f"cannot install into {bdir} / {cdir}: {e.strerror}: {e.filename}",
                             hint="pass writable bin_dir and conf_dir directories; nothing was left behind") from None
        raise
    return CniInstall(bdir, cdir, path, targets, ddir, network, conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], conf)


@dataclass(repr=False)
class CniReply(Rich):
    """One plugin call: exit code, parsed JSON reply (result or spec error), stderr."""

    command: str
    returncode: int
    reply: dict | None
    stderr: str = ""
    _title_text = "CNI call"

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def addresses(self) -> list[str]:
        return [ip["address"] for ip in (self.reply or {}).get("ips", [])]

    def summary(self) -> dict[str, Any]:
        s: dict[str, Any] = {"command": self.command, "rc": self.returncode}
        if self.reply and "code" in self.reply:
            s.update(code=self.reply["code"], msg=self.reply.get("msg"))
        elif self.addresses:
            s["ips"] = ",".join(self.addresses)
        return s

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([self.summary()])


def call_plugin(
    program: str | os.PathLike,
    command: str,
    config: dict | str | bytes,
    container_id: str = "",
    netns: str = "",
    ifname: str = "eth0",
    cni_path: str | None = None,
    args: str = "",
    timeout: float = 30,
) -> CniReply:
    """Run a CNI plugin executable the way a runtime does (``CNI_*`` env vars, config on stdin)."""
    prog = Path(program)
    if not prog.is_file() or not os.access(prog, os.X_OK):
        raise InvalidParameter(f"{prog} is not an executable file", hint="pass the path install_cni() wrote")
    data = config if isinstance(config, bytes) else (config if isinstance(config, str) else json.dumps(config)).encode()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": args,
        "CNI_PATH": cni_path or str(prog.parent),
    }
    p = subprocess.run([str(prog)], input=data, env=env, capture_output=True, timeout=timeout)
    out = p.stdout.decode(errors="replace").strip()
    try:
        reply = json.loads(out) if out else None
    except ValueError:
        reply = {"raw": out}
    return CniReply(command, p.returncode, reply, p.stderr.decode(errors="replace"))
