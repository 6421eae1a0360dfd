"""Where the kit keeps things — cache (downloads), state (tags for the reaper), temp dirs — and finds programs.

Every directory the kit creates carries the ``k3snb`` tag in its name and a record in the state
dir, so ``k3snb doctor --clean`` can remove exactly what a killed run left behind and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path

TAG = "k3snb"


def is_root() -> bool:
    return os.geteuid() == 0


def cache_dir() -> Path:
    """Downloads and extracted binaries (runsc 2024, k3s). ``K3SNB_CACHE`` overrides."""
    env = os.environ.get("K3SNB_CACHE")
    if env:
        p = Path(env)
    elif is_root():
        p = Path("/var/cache/k3snb")
    else:
        p = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "k3snb"
    p.mkdir(parents=True, exist_ok=True)
    return p


def state_dir() -> Path:
    """Records of live objects (sandboxes, processes, temp dirs); on tmpfs so a reboot clears it."""
    env = os.environ.get("K3SNB_STATE")
    if env:
        p = Path(env)
    elif is_root() and Path("/run").is_dir():
        p = Path("/run/k3snb")
    else:
        p = Path(os.environ.get("XDG_RUNTIME_DIR", "/tmp")) / f"{TAG}-state-{os.getuid()}"
    return private_dir(p)


def private_dir(p: Path) -> Path:
    """Create ``p`` (mode 0700) or check that the existing one is a real directory owned by this user
    that nobody else can write: in a shared sticky /tmp anyone could have made it first.

    Raises:
        UnsafeStateDir: a symlink or non-directory, another owner, or group/world-writable.
    """
    from .errors import UnsafeStateDir

    p.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        p.mkdir(mode=0o700)
    st = os.lstat(p)
    me = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateDir(f"state dir {p} is not a directory (a symlink or file planted there?)", path=str(p))
    if st.st_uid != me:
        raise UnsafeStateDir(f"state dir {p} belongs to uid {st.st_uid}, not to you (uid {me})", path=str(p))
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeStateDir(f"state dir {p} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})",
                             hint=f"chmod go-w {p}, or set K3SNB_STATE to a directory only you can write",
                             path=str(p))
    return p


def tmp_root() -> Path:
    """Parent of the kit's temp dirs. ``K3SNB_TMP`` overrides (tests point it into the run folder)."""
    env = os.environ.get("K3SNB_TMP")
    p = Path(env) if env else Path(os.environ.get("TMPDIR", "/tmp"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def kit_python() -> str:
    """The interpreter of the kit's own environment (usable inside gVisor: the host root is mounted)."""
    return sys.executable


# Debian's system binaries, also when the caller's PATH is a venv's or a minimal one (cron, sudo -E)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def need_program(prog: str, pkg: str) -> str:
    """The path of ``prog`` on the system PATH; MissingDependency naming the Debian package(s) if absent."""
    import shutil

    from .errors import MissingDependency

    p = shutil.which(prog, path=SYSTEM_PATH)
    if not p:
        raise MissingDependency(f"{prog} not found", hint=f"apt-get install {pkg}")
    return p
