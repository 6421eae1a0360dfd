"""``python -m k3snb.workarounds._userns [--map "0 0 65536"] [--mount] -- CMD...``

Run CMD in a new user namespace (optionally with a new mount namespace) whose uid/gid map is NOT
the full identity map, so ``RunningInUserNS()`` becomes true for the kubelet (anchors D.3) — the
identity map ``0 0 4294967295`` is what runc/kubelet treat as "not in a user namespace". A helper
child, still in the parent namespace with CAP_SETUID, writes the maps (as newuidmap would), then
this process execs CMD, so the wrapper's pid stays the command's pid.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m k3snb.workarounds._userns")
    ap.add_argument("--map", default="0 0 65536", help="uid_map/gid_map line (inside outside count)")
    ap.add_argument("--mount", action="store_true", help="also unshare the mount namespace")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("missing command after --")
    r, w = os.pipe()
    r2, w2 = os.pipe()
    helper = os.fork()
    if helper == 0:  # helper: wait until the parent unshared, then write its maps
        os.close(w)
        os.close(r2)
        os.read(r, 1)
        pid = os.getppid()
        rc = 0
        try:
            for f in ("uid_map", "gid_map"):
                with open(f"/proc/{pid}/{f}", "w") as fh:
                    fh.write(a.map + "\n")
        except OSError as e:
            print(f"k3snb userns: cannot write {f}: {e}", file=sys.stderr)
            rc = 1
        os.write(w2, b"1" if rc == 0 else b"0")
        os._exit(rc)
    os.close(r)
    os.close(w2)
    libc = ctypes.CDLL(None, use_errno=True)
    flags = CLONE_NEWUSER | (CLONE_NEWNS if a.mount else 0)
    if libc.unshare(flags) != 0:
        e = ctypes.get_errno()
        print(f"k3snb userns: unshare failed: {os.strerror(e)}", file=sys.stderr)
        os.write(w, b"x")
        os.waitpid(helper, 0)
        return 126
    os.write(w, b"x")
    ok = os.read(r2, 1) == b"1"
    os.waitpid(helper, 0)
    if not ok:
        return 126
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    os.execvp(cmd[0], cmd)
    return 127


if __name__ == "__main__":
    sys.exit(main())
