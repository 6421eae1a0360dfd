"""The probe that runs *inside* a runner (host namespace or gVisor sandbox).

Stdlib only (ctypes for the raw syscalls), so it is cheap to import wherever the kit's Python
runs. :func:`collect` returns a JSON-able dict; :mod:`k3snb.probing._probe` turns it into facts.

Safety rules, because on the ``Host`` runner ``/proc/sys``, the network and the cgroup tree are
the real host's:

* nothing under ``/proc/sys`` is written unless the caller passes ``write_back=True`` *and* the
  probe itself sees a gVisor kernel; otherwise writability is judged by ``open(O_WRONLY)``
  without writing;
* mount experiments run in a forked child inside a fresh mount namespace, and only when that
  namespace cannot propagate anything out (``/`` made rprivate, or no shared peer groups at all);
  everything is mounted on a scratch tmpfs and detached before the child exits;
* iptables is only *listed*, and on a non-gVisor kernel only inside a fresh network namespace;
* cgroup v1 controllers are test-mounted outside gVisor only when the host already has them
  mounted (so no new hierarchy is created).
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any

from ._probe_active import (
    _child_iptables,
    _child_misc,
    _child_mounts,
    _child_seccomp,
    _child_userns,
    _ptrace,
    _seccomp_actions,
)

# --- constants ----------------------------------------------------------------------------------
from ._probe_lib import GVISOR_UNAME_VERSION, _c, _rc, _read, _run_in_child
from ._probe_passive import (
    _capabilities,
    _cgroup,
    _count_files,
    _dev,
    _find_mount,
    _fs,
    _proc_sys,
    _sandbox,
    _status,
    _statx,
    parse_mountinfo,
)


def collect(procsys: list[str], *, write_back: bool = False, timeout: float = 20.0) -> dict[str, Any]:
    """Probe the environment this process runs in; returns a JSON-able dict (see module doc)."""
    t0 = time.monotonic()
    u = os.uname()
    out: dict[str, Any] = {
        "kernel_release": u.release,
        "kernel_version": u.version,
        "machine": u.machine,
        "hostname": u.nodename,
        "python": platform.python_version(),
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "pid": os.getpid(),
        "cpu_count": os.cpu_count(),
    }
    mounts = parse_mountinfo(_read("/proc/self/mountinfo") or "")
    root = _find_mount(mounts, "/")
    gvisor = u.version == GVISOR_UNAME_VERSION
    out["sandbox"] = _sandbox(u, root, mounts)
    rootfs = _fs("/")
    out["root_fstype"] = rootfs["name"] if rootfs["name"] != "unknown" else (root or {}).get("fstype")
    out["root_fsmagic"] = rootfs["magic"]
    out["root_mount"] = root
    out["statfs"] = {
        p: _fs(p)
        for p in ("/", "/tmp", "/run", "/var/lib", "/proc", "/sys", "/sys/fs/cgroup", "/dev", "/dev/shm")
    }
    interesting = ("/", "/proc", "/sys", "/dev", "/dev/shm", "/dev/pts", "/tmp", "/run", "/var/lib")
    out["mounts"] = {
        "count": len(mounts),
        "fstypes": sorted({m["fstype"] for m in mounts}),
        "highlights": [
            m
            for m in mounts
            if m["mountpoint"] in interesting or m["mountpoint"].startswith("/sys/fs/cgroup")
        ],
    }
    fsys = (_read("/proc/filesystems") or "").split()
    out["filesystems"] = sorted(set(fsys) - {"nodev"})
    write_back = bool(write_back and gvisor)  # never write /proc/sys outside a gVisor sandbox
    out["proc_sys"] = _proc_sys(procsys, write_back)
    out["proc_sys_write_back"] = write_back
    out["proc_sys_files"] = _count_files("/proc/sys")
    out["dev_kmsg"] = _dev("/dev/kmsg", os.O_RDONLY)
    out["devices"] = {
        name: _dev(path, flags)
        for name, path, flags in (
            ("fuse", "/dev/fuse", os.O_RDWR),
            ("kvm", "/dev/kvm", os.O_RDWR),
            ("net_tun", "/dev/net/tun", os.O_RDWR),
            ("null", "/dev/null", os.O_RDWR),
            ("console", "/dev/console", os.O_RDONLY),
        )
    }
    status = _status()
    out["capabilities"] = _capabilities(status)
    out["cgroup"] = _cgroup(mounts)
    out["namespaces"] = sorted(os.listdir("/proc/self/ns")) if os.path.isdir("/proc/self/ns") else []
    uid_map = (_read("/proc/self/uid_map") or "").strip()
    fields = uid_map.split()
    identity = fields == ["0", "0", "4294967295"]
    out["userns"] = {
        "uid_map": " ".join(fields),
        "gid_map": " ".join((_read("/proc/self/gid_map") or "").split()),
        "identity_map": identity,
        # kubelet's RunningInUserNS(): anything but the full identity map means a user namespace
        "in_user_namespace": bool(fields) and not identity,
    }
    out["userns"].update(_run_in_child(_child_userns, timeout).get("result", {}))
    out["ptrace"] = _ptrace()
    out["ptrace"]["yama_ptrace_scope"] = (_read("/proc/sys/kernel/yama/ptrace_scope") or "").strip() or None
    seccomp = {
        "mode": status.get("Seccomp"),
        "no_new_privs": status.get("NoNewPrivs"),
        "actions_avail": _seccomp_actions(),
    }
    child = _run_in_child(_child_seccomp, timeout)
    seccomp.update(child.get("result") or {"filter_install": child.get("error")})
    out["seccomp"] = seccomp
    out["statx"] = _statx()
    misc = _run_in_child(_child_misc, timeout)
    out["prctl"] = misc.get("result") or {"subreaper": misc.get("error")}
    try:
        fd = _c().inotify_init1(0o2000000)
        out["inotify"] = _rc(fd)
        if fd >= 0:
            os.close(fd)
    except AttributeError:
        out["inotify"] = "no inotify_init1 in libc"
    ipt = _run_in_child(lambda: _child_iptables(gvisor), timeout + 20)
    out["iptables"] = ipt.get("result") or {"error": ipt.get("error")}
    v1_mounted = [c for c, v in out["cgroup"]["controllers"].items() if v["mounted_at"]]
    mnt = _run_in_child(lambda: _child_mounts(gvisor, v1_mounted), timeout + 20)
    out["mount_ops"] = mnt.get("result") or {"error": mnt.get("error")}
    out["probe_seconds"] = round(time.monotonic() - t0, 3)
    return out


if __name__ == "__main__":  # python -m k3snb.probing._collect: quick look without a runner
    import sys

    keys = sys.argv[1:] or ["kernel/panic", "kernel/cap_last_cap", "vm/overcommit_memory"]
    print(json.dumps(collect(keys), indent=1, default=str))
