"""Facts the probe reads without changing anything: /proc, /sys, statfs, capabilities, sandbox
kind, cgroups, statx."""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any

from .. import _system

# --- constants ----------------------------------------------------------------------------------
from .._fsmagic import FS_MAGIC
from ._probe_lib import (
    AT_FDCWD,
    AT_NO_AUTOMOUNT,
    AT_SYMLINK_NOFOLLOW,
    CAP_NAMES,
    GVISOR_UNAME_VERSION,
    OK,
    SYS_STATX,
    _c,
    _err,
    _oserr,
    _rc,
    _read,
    statfs_magic,
)


def _fs(path: str) -> dict[str, Any]:
    m = statfs_magic(path)
    if m is None:
        return {"present": os.path.exists(path), "magic": None, "name": None}
    return {"present": True, "magic": f"0x{m:08x}", "name": FS_MAGIC.get(m, "unknown")}


def parse_mountinfo(text: str) -> list[dict[str, Any]]:
    """Mounts as the probe records them (``id`` as text, ``propagation`` "private" when no tag)."""
    return [{"id": str(m.id), "parent": str(m.parent), "root": m.root, "mountpoint": m.mountpoint,
             "options": m.options, "propagation": m.propagation or "private", "fstype": m.fstype, "source": m.source,
             "super_options": m.super_options} for m in _system.parse_mountinfo(text)]


def _find_mount(mounts: list[dict[str, Any]], path: str) -> dict[str, Any] | None:
    """The mount that ``path`` lives on (see :func:`k3snb._system.find_mount`)."""
    objs = [_system.Mount(**{**m, "id": int(m["id"]), "parent": int(m["parent"]), "dev": ""}) for m in mounts]
    found = _system.find_mount(path, objs)
    return None if found is None else mounts[objs.index(found)]


def decode_caps(hexmask: str) -> list[str]:
    v = int(hexmask, 16)
    return [CAP_NAMES[i] if i < len(CAP_NAMES) else f"cap_{i}" for i in range(64) if v >> i & 1]


def _status() -> dict[str, str]:
    out = {}
    for line in (_read("/proc/self/status") or "").splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


def _capabilities(status: dict[str, str]) -> dict[str, Any]:
    caps: dict[str, Any] = {}
    for field, name in (
        ("CapEff", "effective"),
        ("CapPrm", "permitted"),
        ("CapBnd", "bounding"),
        ("CapInh", "inheritable"),
        ("CapAmb", "ambient"),
    ):
        if field in status:
            caps[field] = status[field]
            caps[name] = decode_caps(status[field])
    eff = set(caps.get("effective", []))
    caps["missing_effective"] = [n for n in CAP_NAMES if n not in eff]
    return caps


def _dev(path: str, flags: int) -> dict[str, Any]:
    out: dict[str, Any] = {"present": os.path.lexists(path)}
    if not out["present"]:
        out["open"] = _err(errno.ENOENT)
        return out
    try:
        st = os.stat(path)
        out["char_device"] = bool(st.st_mode & 0o170000 == 0o020000)
        out["rdev"] = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    except OSError as e:
        out["stat"] = _oserr(e)
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
        os.close(fd)
        out["open"] = OK
    except OSError as e:
        out["open"] = _oserr(e)
    return out


def _proc_sys(keys: list[str], write_back: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        path = "/proc/sys/" + key
        rec: dict[str, Any] = {
            "present": os.path.exists(path),
            "readable": False,
            "writable": False,
            "value": None,
            "mode": None,
            "method": None,
            "error": None,
        }
        out[key] = rec
        if not rec["present"]:
            rec["error"] = _err(errno.ENOENT)
            continue
        try:
            rec["mode"] = oct(os.stat(path).st_mode & 0o777)
        except OSError as e:
            rec["error"] = _oserr(e)
        try:
            with open(path, "rb") as f:
                rec["value"] = f.read(4096).decode(errors="replace").strip().replace("\t", " ")
            rec["readable"] = True
        except OSError as e:
            rec["error"] = _oserr(e)
        if write_back and rec["readable"]:
            # Only ever inside a gVisor sandbox: write the value just read, which changes nothing.
            rec["method"] = "write-same-value"
            try:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, (rec["value"] + "\n").encode())
                finally:
                    os.close(fd)
                rec["writable"] = True
            except OSError as e:
                rec["error"] = "write: " + _oserr(e)
        else:
            rec["method"] = "open(O_WRONLY), no write"
            try:
                os.close(os.open(path, os.O_WRONLY))
                rec["writable"] = True
            except OSError as e:
                rec["error"] = rec["error"] or "open-w: " + _oserr(e)
    return out


def _count_files(top: str) -> int:
    n = 0
    for _, _, files in os.walk(top):
        n += len(files)
    return n


def _sandbox(uname: Any, root: dict[str, Any] | None, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """Which sandbox (if any) this process runs in, detected from inside, with the evidence."""
    evidence: list[str] = []
    in_gvisor = uname.version == GVISOR_UNAME_VERSION
    if in_gvisor:
        evidence.append(f"uname -v is gVisor's fixed build string {uname.version!r}")
    if root and root["fstype"] == "9p" and "trans=fd" in (root["super_options"] + root["options"]):
        evidence.append("root is 9p over a file-descriptor transport (gVisor gofer)")
        in_gvisor = True
    # Strong container markers come from pid 1; marker files alone are weak (VM images are often
    # built from container images and keep /.dockerenv, as this kit's own VM does).
    strong = []
    env1 = _read("/proc/1/environ") or ""
    if "container=" in env1:
        strong.append("pid 1 has container= in its environment")
    cg1 = _read("/proc/1/cgroup") or ""
    for word in ("docker", "kubepods", "containerd", "lxc", "libpod"):
        if word in cg1:
            strong.append(f"/proc/1/cgroup mentions {word}")
            break
    if root and root["fstype"] == "overlay" and not in_gvisor:
        strong.append("root filesystem is overlay")
    weak = [
        f"{m} exists (weak: image marker)" for m in ("/.dockerenv", "/run/.containerenv") if os.path.exists(m)
    ]
    vm = []
    cpuinfo = _read("/proc/cpuinfo", 1 << 20) or ""
    if " hypervisor" in cpuinfo:
        vm.append("cpuinfo has the hypervisor flag")
    vendor = (_read("/sys/class/dmi/id/sys_vendor") or "").strip()
    product = (_read("/sys/class/dmi/id/product_name") or "").strip()
    if vendor or product:
        vm.append(f"DMI says {vendor} {product}".strip())
    if "-fc-" in uname.release:
        vm.append(f"kernel release {uname.release!r} looks like a Firecracker guest")
    if in_gvisor:
        vm = [f"host side, passed through: {v}" for v in vm]
    evidence += strong + weak + vm
    if in_gvisor:
        kind = "gvisor"
    else:
        if strong or (weak and not vm):
            kind = "container"
        elif vm:
            kind = "vm"
        else:
            kind = "bare-metal"
    if not evidence:
        evidence.append("no container, hypervisor or gVisor markers found")
    return {"kind": kind, "evidence": evidence}


def _cgroup(mounts: list[dict[str, Any]]) -> dict[str, Any]:
    v1 = [m for m in mounts if m["fstype"] == "cgroup"]
    v2 = [m for m in mounts if m["fstype"] == "cgroup2"]
    sysfs_cg = _fs("/sys/fs/cgroup")
    if sysfs_cg["name"] == "cgroup2":
        version = "v2"
    elif v1 and v2:
        version = "hybrid"
    elif v1:
        version = "v1"
    elif v2:
        version = "v2"
    else:
        version = "none"
    controllers: dict[str, Any] = {}
    for line in (_read("/proc/cgroups") or "").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        p = line.split()
        if len(p) >= 4:
            controllers[p[0]] = {"hierarchy": int(p[1]), "enabled": p[3] == "1", "mounted_at": None}
    for m in v1:
        for opt in m["super_options"].split(","):
            if opt in controllers and controllers[opt]["mounted_at"] is None:
                controllers[opt]["mounted_at"] = m["mountpoint"]
    v2_controllers = None
    for m in v2:
        txt = _read(os.path.join(m["mountpoint"], "cgroup.controllers"))
        if txt is not None:
            v2_controllers = txt.split()
            break
    return {
        "version": version,
        "fs": sysfs_cg,
        "v1_mounts": [m["mountpoint"] for m in v1],
        "v2_mounts": [m["mountpoint"] for m in v2],
        "controllers": controllers,
        "v2_controllers": v2_controllers,
        "self": (_read("/proc/self/cgroup") or "").strip().splitlines(),
        "ns_cgroup": os.path.exists("/proc/self/ns/cgroup"),
    }


def _statx() -> dict[str, Any]:
    buf = ctypes.create_string_buffer(512)
    out = {}
    for name, flags in (
        ("plain", AT_SYMLINK_NOFOLLOW),
        ("at_no_automount", AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT),
    ):
        ret = _c().syscall(
            ctypes.c_long(SYS_STATX),
            ctypes.c_int(AT_FDCWD),
            b"/",
            ctypes.c_int(flags),
            ctypes.c_uint(0x7FF),
            buf,
        )
        out[name] = _rc(ret)
    return out


def _sbin(name: str) -> str | None:
    for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None
