"""Measurements for notebook 30 (Exp 30's shim mismatch, S38): which containerd shims the installed
containerd accepts, per environment. Rows are machine-independent. Verdicts: :mod:`k3snb.studies.shims`.

The research paired a containerd 1.7.28 daemon with a containerd 2.x shim (``unsupported shim version
(3)``). Only Debian's containerd 1.6 and its shims are installed here, so the kit tests what these
binaries allow: 1.6's own ``io.containerd.runc.v2`` and ``runc.v1`` shims, the legacy
``io.containerd.runtime.v1.linux`` shim, and a stand-in for a 2.x shim — a program that answers
``start`` with the bootstrap JSON of shim protocol version 3 — run by absolute path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["SHIMS", "V3_BOOTSTRAP", "shim_matrix", "containerd_version"]

# what a containerd 2.x shim prints on `start` (bootstrap protocol version 3, ttrpc)
V3_BOOTSTRAP = '{"version":3,"address":"unix:///run/containerd-shim-v3.sock","protocol":"ttrpc"}'
SHIMS = ("io.containerd.runc.v2", "io.containerd.runc.v1", "io.containerd.runtime.v1.linux", "v3-bootstrap shim")


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MOUNT_N = re.compile(r"(containerd-mount|tmpmounts/)\d+")


def _v3_shim_script() -> str:
    return ("#!/bin/sh\n# stands in for a containerd 2.x shim: `start` prints the v3 bootstrap JSON\n"
            f"case \" $* \" in *\" start \"*) echo '{V3_BOOTSTRAP}'; exit 0;; esac\nexit 0\n")


def containerd_version() -> str:
    """``containerd --version`` of the binary the kit runs (e.g. ``containerd ... 1.6.20~ds1``)."""
    from .._system import program_output
    from .containerd import runtime_binary

    _rc, out, _err = program_output(runtime_binary("containerd"), ("--version",))
    m = re.search(r"\s(v?\d+\.\d+\.\d+\S*)", out)
    return f"containerd {m.group(1)}" if m else (out.strip() or "?")


def shim_matrix(envs: Sequence[str], shims: Sequence[str] = SHIMS, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Per environment: one kit containerd (cgroup v1 by the kit where the runner has none), busybox
    imported, then ``ctr run --runtime <shim>`` of ``echo hello`` per shim. A row says whether it ran and,
    if not, the error (sanitized) and its signature."""
    from ..runners import resolve
    from ..signatures import classify
    from .cgroupfs_probes import sanitize
    from .containerd import Containerd
    from .run import ensure_cgroups

    rows = []
    for env in envs:
        with resolve(env) as runner, ensure_cgroups(runner, "auto"):
            fake = runner.workdir / "containerd-shim-k3snbv3-v2"
            fake.write_text(_v3_shim_script())
            fake.chmod(0o755)
            with Containerd(runner) as c:
                imp = c.import_image("busybox")
                for i, shim in enumerate(shims):
                    rt = str(fake) if shim == "v3-bootstrap shim" else shim
                    if not imp.ok:
                        res_ok, err = False, "image import/unpack failed: " + (imp.stderr or imp.stdout)
                        out = ""
                    else:
                        res = c.ctr("run", "--rm", "--runtime", rt, "k3snb.local/busybox:latest", f"k3snb-shim-{i}",
                                    "echo", "hello", timeout=timeout)
                        res_ok, out, err = res.ok, res.stdout.strip(), (res.stderr or "").strip()
                        c.ctr("task", "kill", "-s", "KILL", f"k3snb-shim-{i}", timeout=30)
                        c.ctr("containers", "rm", f"k3snb-shim-{i}", timeout=30)
                    # ctr's own last line; no digests, mount counters or paths of this machine
                    last = next((ln for ln in reversed(err.splitlines()) if ln.startswith("ctr:")), err)
                    text = sanitize(last.replace("\x00", "@"), {str(fake): "<v3-shim>",
                                                                str(runner.workdir): "<workdir>", c.address: "<socket>"})
                    text = _MOUNT_N.sub(r"\1N", _DIGEST.sub("sha256:<layer>", text))
                    ids = classify(last).ids if last.strip() else []  # on the raw text: patterns may name digests
                    sig = ids[0] if ids else None
                    rows.append({"env": env, "shim": shim, "ran": res_ok and out == "hello", "stdout": out,
                                 "error": text[-300:], "signature": sig})
    return rows
