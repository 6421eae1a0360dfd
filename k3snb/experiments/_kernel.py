"""The kit's Jupyter kernelspec and the per-run Jupyter/IPython/matplotlib dirs every kernel uses."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import MissingDependency

KERNEL_NAME = "k3snb"
KERNEL_DISPLAY = "Python 3 (k3snb)"
START_TIMEOUT = 180  # papermill's 60 s default is too short for a kernel on a loaded 2-core CI box


def kernel_dir() -> Path:
    return Path(sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME


def ensure_kernel() -> str:
    """Install the kit's kernelspec into this environment (``--sys-prefix``) unless present; return its name."""
    if (kernel_dir() / "kernel.json").is_file():
        return KERNEL_NAME
    # ipykernel leaves a tmpXXXX_kernels dir in $TMPDIR; give it a private one and remove it
    with tempfile.TemporaryDirectory(prefix="k3snb-kernel-") as tmp:
        r = subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL_NAME,
             "--display-name", KERNEL_DISPLAY],
            capture_output=True, text=True, env={**os.environ, "TMPDIR": tmp},
        )
    if r.returncode != 0:
        raise MissingDependency(f"cannot install the {KERNEL_NAME!r} kernelspec: {r.stderr.strip()[-300:]}",
                                hint="run scripts/setup.sh (it installs the kernelspec into .venv)")
    return KERNEL_NAME


def kit_env(kit: Path) -> dict[str, str]:
    """Create Jupyter/IPython/matplotlib/temp dirs under ``kit``; the env vars pointing at them."""
    dirs = {
        "IPYTHONDIR": kit / "ipython",
        "JUPYTER_CONFIG_DIR": kit / "jupyter" / "config",
        "JUPYTER_DATA_DIR": kit / "jupyter" / "data",
        "JUPYTER_RUNTIME_DIR": kit / "jupyter" / "runtime",
        "MPLCONFIGDIR": kit / "mpl",
        "TMPDIR": kit / "tmp",
    }
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return {k: str(v) for k, v in dirs.items()} | {"JUPYTER_PLATFORM_DIRS": "1"}
