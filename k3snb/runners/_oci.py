"""The OCI bundle the GVisor runner hands to runsc (private: the spec shape is a kit decision).

Shape (gvisor-matrix §3, "oci"): root = host ``/`` read-only — inside it shows as 9p, like the
restricted sandboxes under study — all capabilities, tmpfs on /tmp, /run and /var/lib, proc, sysfs,
devpts, shm, a tmpfs /dev, and an rw bind of the runner's workdir at the same path.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter

# Every capability a 5.x/6.x kernel names; runsc ignores ones it does not know, and strips
# CAP_NET_RAW unless --net-raw is given.
ALL_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
]

# Writable tmpfs mounts of the spec: they hide whatever the host has at these paths.
TMPFS_DIRS = ("/tmp", "/run", "/var/lib")

# Host secrets the sandbox must not read (the root is the host's own, read-only): files are covered
# by an empty read-only file, directories by an empty tmpfs. The kit's own paths, the workdir and
# explicit binds are mounted after these, so a checkout under /root or /home stays visible.
SECRET_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/ssh/ssh_host_*")
SECRET_DIRS = ("/root", "/home", "/etc/ssl/private")


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def secret_masks(empty_file: str, extra_dirs: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Mounts hiding the host's secrets: ``empty_file`` bound read-only over each secret file, an
    empty tmpfs over each secret directory (and ``extra_dirs``, e.g. the kit's state dir)."""
    files = sorted({os.path.realpath(f) for pat in SECRET_FILES for f in glob.glob(pat) if os.path.isfile(f)})
    dirs = [os.path.realpath(d) for d in (*SECRET_DIRS, *extra_dirs) if os.path.isdir(d)]
    # a dir already hidden by a tmpfs (the spec's, or another mask) needs no mount of its own
    hidden = (*TMPFS_DIRS, *dirs)
    dirs = sorted({d for d in dirs if not any(_under(d, h) and d != h for h in hidden)})
    dirs = [d for d in dirs if not any(_under(d, t) for t in TMPFS_DIRS)]
    out = [{"destination": d, "type": "tmpfs", "source": "k3snb-masked",
            "options": ["nosuid", "nodev", "mode=0700" if d == "/root" else "mode=0755"]}
           for d in dirs]
    out += [{"destination": f, "type": "bind", "source": empty_file, "options": ["bind", "ro"]}
            for f in files if not any(_under(f, d) for d in (*dirs, *TMPFS_DIRS))]
    return out


def hidden_by_tmpfs(paths: Iterable[str], masked: Iterable[str] = ()) -> list[Bind]:
    """Read-only binds for host paths the sandbox must see but that lie under a tmpfs mount point
    or a masked directory (a checkout or venv under /tmp or /root would otherwise vanish inside,
    taking the kit's Python with it)."""
    out: dict[str, Bind] = {}
    tops = (*TMPFS_DIRS, *masked)
    for p in paths:
        real = os.path.realpath(p)
        if os.path.exists(real) and any(_under(real, d) for d in tops):
            out.setdefault(real, Bind(real, real, readonly=True))
    # a bind inside another one is redundant
    keep = [b for b in out.values() if not any(b.source.startswith(o + "/") for o in out if o != b.source)]
    return sorted(keep, key=lambda b: b.source)


# The container's init only holds the sandbox open; commands arrive via `runsc exec`.
INIT_ARGS = ["/bin/sleep", "infinity"]


@dataclass(frozen=True)
class Bind:
    source: str
    destination: str
    readonly: bool = False

    def mount(self) -> dict[str, Any]:
        return {"destination": self.destination, "type": "bind", "source": self.source,
                "options": ["bind", "ro" if self.readonly else "rw"]}


def parse_binds(binds: Iterable[str | Sequence | Bind] | None) -> list[Bind]:
    """Accept ``"SRC[:DST[:ro|rw]]"`` strings, ``(src, dst[, readonly])`` tuples or :class:`Bind`."""
    out = []
    for b in binds or ():
        if isinstance(b, Bind):
            item = b
        elif isinstance(b, str | os.PathLike):
            parts = str(b).split(":")
            if len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
                raise InvalidParameter(f"bad bind {b!r}", hint="write binds as 'SRC[:DST[:ro|rw]]'")
            item = Bind(parts[0], parts[1] if len(parts) > 1 else parts[0], len(parts) == 3 and parts[2] == "ro")
        elif isinstance(b, Sequence) and 1 <= len(b) <= 3:
            item = Bind(str(b[0]), str(b[1]) if len(b) > 1 else str(b[0]), bool(b[2]) if len(b) > 2 else False)
        else:
            raise InvalidParameter(f"bad bind {b!r}", hint="write binds as 'SRC[:DST[:ro|rw]]' or (src, dst, ro)")
        if not os.path.isabs(item.source) or not os.path.isabs(item.destination):
            raise InvalidParameter(f"bind paths must be absolute: {b!r}", hint="use absolute paths in binds")
        if not os.path.exists(item.source):
            raise InvalidParameter(f"bind source {item.source!r} does not exist",
                                   hint="create the directory first or fix the path")
        out.append(item)
    return out


def resolve_caps(caps: bool | Iterable[str] | None) -> list[str]:
    if caps is None or caps is True:
        return list(ALL_CAPS)
    if caps is False:
        return []
    if isinstance(caps, str):
        caps = [caps]
    out = []
    for c in caps:
        name = c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper()
        if name not in ALL_CAPS:
            raise InvalidParameter(f"unknown capability {c!r}",
                                   hint="use names like 'CAP_SYS_ADMIN' or 'sys_admin', or caps=True for all")
        out.append(name)
    return out


def spec(
    workdir: str,
    *,
    caps: bool | Iterable[str] | None = True,
    binds: Sequence[Bind] = (),
    env: Mapping[str, str] | None = None,
    hostname: str = "k3snb",
    netns_path: str | None = None,
    readonly_root: bool = True,
    kit_paths: Iterable[str] = (),
    masks: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Build the OCI ``config.json`` dict (``masks``: from :func:`secret_masks`)."""
    capset = resolve_caps(caps)
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "nodev", "mode=1777"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
        {"destination": "/var/lib", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
    ]
    mounts += list(masks)
    # Binds after the tmpfs mounts and masks, so a workdir under /tmp lands on top of the /tmp tmpfs;
    # the kit's own paths first, so an explicit bind or the workdir can still sit inside them.
    mounts += [b.mount() for b in hidden_by_tmpfs(kit_paths, [m["destination"] for m in masks
                                                              if m["type"] == "tmpfs"])]
    mounts.append({"destination": workdir, "type": "bind", "source": workdir, "options": ["bind", "rw"]})
    mounts += [b.mount() for b in binds]
    namespaces = [{"type": t} for t in ("pid", "mount", "uts", "ipc")]
    if netns_path:
        namespaces.append({"type": "network", "path": netns_path})
    base_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM": "xterm"}
    base_env.update(env or {})
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": INIT_ARGS,
            "env": [f"{k}={v}" for k, v in base_env.items()],
            "cwd": "/",
            "capabilities": {k: capset for k in ("bounding", "effective", "inheritable", "permitted")},
            "noNewPrivileges": False,
        },
        "root": {"path": "/", "readonly": readonly_root},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {"namespaces": namespaces},
    }


def write_config(bundle: Path, config: dict[str, Any]) -> Path:
    """Write ``config.json`` into the bundle folder (the rootfs is the host's own ``/``, so nothing else)."""
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(config, indent=1))
    return bundle
