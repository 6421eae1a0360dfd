"""The probe that runs *inside* a runner (host namespace or gVisor sandbox).

Stdlib only (ctypes for the raw syscalls), so it is cheap to import wherever the kit's Python
runs. :func:`collect` returns a JSON-able dict; :mod:`k3snb.probing._record` turns it into facts.

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

import ctypes
import errno
import json
import os
import platform
import select
import signal
import subprocess
import time
from typing import Any

from .. import _system
from .._system import (
    MS_BIND,
    MS_MOVE,
    MS_NODEV,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
)

# --- constants ----------------------------------------------------------------------------------
FS_MAGIC = {
    0x01021997: "9p",
    0x794C7630: "overlay",
    0xEF53: "ext4",
    0x01021994: "tmpfs",
    0x9FA0: "proc",
    0x62656572: "sysfs",
    0x27E0EB: "cgroup",
    0x63677270: "cgroup2",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x1CD1: "devpts",
    0x65735546: "fuse",
    0x6969: "nfs",
    0x73717368: "squashfs",
    0x858458F6: "ramfs",
    0x64626720: "debugfs",
    0x74726163: "tracefs",
    0xCAFE4A11: "bpf",
    0x19800202: "mqueue",
    0x42494E4D: "binfmt_misc",
    0x73636673: "securityfs",
    0x6E736673: "nsfs",
    0xF2F52010: "f2fs",
}

CAP_NAMES = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
]

# The fixed build string every gVisor sentry reports in uname(2) -v.
GVISOR_UNAME_VERSION = "#1 SMP Sun Jan 10 15:06:54 PST 2016"

CGROUP_V1_CONTROLLERS = (
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "pids",
    "devices",
    "freezer",
    "blkio",
    "net_cls",
    "hugetlb",
)

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000

# x86_64 syscall numbers (the kit targets x86_64 only)
SYS_PIVOT_ROOT, SYS_SECCOMP, SYS_STATX = 155, 317, 332
AT_FDCWD, AT_SYMLINK_NOFOLLOW, AT_NO_AUTOMOUNT = -100, 0x100, 0x800

PR_SET_SECCOMP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 22, 36, 38
SECCOMP_MODE_FILTER, SECCOMP_GET_ACTION_AVAIL = 2, 2
SECCOMP_ACTIONS = {
    "kill_process": 0x80000000,
    "kill_thread": 0,
    "trap": 0x00030000,
    "errno": 0x00050000,
    "user_notif": 0x7FC00000,
    "trace": 0x7FF00000,
    "log": 0x7FFC0000,
    "allow": 0x7FFF0000,
}
PTRACE_TRACEME, PTRACE_SYSCALL, PTRACE_KILL = 0, 24, 8

OK = "ok"

_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
        _libc.ptrace.restype = ctypes.c_long
        _libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    return _libc


def _err(e: int) -> str:
    name = errno.errorcode.get(e, str(e))
    return f"{name}: {os.strerror(e)}"


def _rc(ret: int) -> str:
    """Map a libc return value to "ok" or "ERRNAME: text"."""
    return OK if ret >= 0 else _err(ctypes.get_errno())


def _b(s: str | None) -> bytes | None:
    return None if s is None else s.encode()


def _mount(src: str | None, dst: str, fstype: str | None, flags: int = 0, data: str | None = None) -> str:
    try:
        _system.mount(src, dst, fstype, flags, data)
        return OK
    except OSError as e:
        return _err(e.errno or 0)


def _umount(path: str) -> str:
    try:
        _system.umount(path, detach=True)
        return OK
    except OSError as e:
        return _err(e.errno or 0)


def _read(path: str, limit: int = 65536) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode(errors="replace")
    except OSError:
        return None


def _oserr(e: OSError) -> str:
    return _err(e.errno) if e.errno else str(e)


def _run_in_child(fn: Any, timeout: float = 20.0) -> dict[str, Any]:
    """Run ``fn()`` in a forked child (so namespaces, prctls and filters die with it)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            out: Any = {"result": fn()}
        except BaseException as e:  # report, never escape into the parent's code path
            out = {"error": f"{type(e).__name__}: {e}"}
        try:
            data = json.dumps(out, default=str).encode()
        except Exception as e:
            data = json.dumps({"error": f"unserialisable: {e}"}).encode()
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    timed_out = False
    with os.fdopen(r, "rb") as f:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([f], [], [], left)
            if not ready:
                continue
            chunk = os.read(f.fileno(), 65536)
            if not chunk:
                break
            chunks.append(chunk)
    if timed_out:
        with _suppress():
            os.kill(pid, signal.SIGKILL)
    with _suppress():
        os.waitpid(pid, 0)
    if timed_out:
        return {"error": f"timed out after {timeout:.0f}s"}
    try:
        return json.loads(b"".join(chunks) or b'{"error": "child wrote nothing"}')
    except ValueError as e:
        return {"error": f"bad child output: {e}"}


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)  # type: ignore[arg-type]


# --- small facts --------------------------------------------------------------------------------
statfs_magic = _system.statfs_type


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


def _seccomp_actions() -> dict[str, str]:
    out = {}
    for name, action in SECCOMP_ACTIONS.items():
        a = ctypes.c_uint32(action)
        ret = _c().syscall(
            ctypes.c_long(SYS_SECCOMP),
            ctypes.c_uint(SECCOMP_GET_ACTION_AVAIL),
            ctypes.c_uint(0),
            ctypes.byref(a),
        )
        out[name] = _rc(ret)
    return out


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _child_seccomp() -> dict[str, Any]:
    c = _c()
    out = {"set_no_new_privs": _rc(c.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))}
    insns = (_SockFilter * 1)(_SockFilter(0x06, 0, 0, SECCOMP_ACTIONS["allow"]))  # BPF_RET|BPF_K ALLOW
    prog = _SockFprog(1, insns)
    out["filter_install"] = _rc(c.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0))
    out["mode_after"] = _status().get("Seccomp")
    return out


def _child_misc() -> dict[str, Any]:
    c = _c()
    return {"subreaper": _rc(c.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))}


def _child_userns() -> dict[str, Any]:
    res = _rc(_c().unshare(CLONE_NEWUSER))
    out: dict[str, Any] = {"unshare_user": res}
    if res == OK:
        out["uid_map_after"] = (_read("/proc/self/uid_map") or "").strip()
    return out


def _ptrace() -> dict[str, Any]:
    """PTRACE_TRACEME in a child, then one PTRACE_SYSCALL stop, then kill it."""
    c = _c()
    out: dict[str, Any] = {"traceme": None, "syscall_stop": None}
    pid = os.fork()
    if pid == 0:
        if c.ptrace(PTRACE_TRACEME, 0, None, None) != 0:
            os._exit(3)
        os.kill(os.getpid(), signal.SIGSTOP)
        os.getppid()
        os._exit(0)
    try:
        _, st = os.waitpid(pid, 0)
        if os.WIFEXITED(st):
            out["traceme"] = f"child exited {os.WEXITSTATUS(st)} (PTRACE_TRACEME failed)"
            return out
        if not (os.WIFSTOPPED(st) and os.WSTOPSIG(st) == signal.SIGSTOP):
            out["traceme"] = f"unexpected wait status {st:#x}"
            return out
        out["traceme"] = OK
        if c.ptrace(PTRACE_SYSCALL, pid, None, None) != 0:
            out["syscall_stop"] = _err(ctypes.get_errno())
            return out
        _, st = os.waitpid(pid, 0)
        out["syscall_stop"] = (
            OK if os.WIFSTOPPED(st) and os.WSTOPSIG(st) == signal.SIGTRAP else f"status {st:#x}"
        )
        return out
    finally:
        with _suppress():
            os.kill(pid, signal.SIGKILL)
        with _suppress():
            os.waitpid(pid, 0)


def _sbin(name: str) -> str | None:
    for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def _child_iptables(gvisor: bool) -> dict[str, Any]:
    import socket

    out: dict[str, Any] = {}
    res = _rc(_c().unshare(CLONE_NEWNET))
    if res == OK:
        out["netns"] = "private (unshare CLONE_NEWNET)"
        # a fresh netns has lo down; nothing needs it up for listing
    elif gvisor:
        out["netns"] = f"sandbox netns (unshare failed: {res})"
    else:
        out["netns"] = f"skipped: no private netns ({res})"
        return out
    for name, args in (
        ("raw_socket", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)),
        ("netlink_netfilter", (socket.AF_NETLINK, socket.SOCK_RAW, 12)),
    ):
        try:
            socket.socket(*args).close()
            out[name] = OK
        except OSError as e:
            out[name] = _oserr(e)
    for variant in ("legacy", "nft"):
        exe = _sbin(f"iptables-{variant}")
        if exe is None:
            out[variant] = {"filter": "not installed", "nat": "not installed"}
            continue
        out[variant] = {}
        for table in ("filter", "nat"):
            try:
                p = subprocess.run(
                    [exe, "-w", "5", "-t", table, "-S"], capture_output=True, text=True, timeout=15
                )
                text = (p.stderr or p.stdout).strip().splitlines()
                out[variant][table] = (
                    OK if p.returncode == 0 else f"rc={p.returncode}: {text[-1] if text else ''}"
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                out[variant][table] = str(e)
    return out


def _isolated_mount_ns() -> tuple[bool, str, str]:
    """Enter a fresh mount namespace from which no mount can propagate out.

    Returns (isolated, how, result of making / rprivate).
    """
    res = _rc(_c().unshare(CLONE_NEWNS))
    if res != OK:
        return False, f"unshare(CLONE_NEWNS): {res}", "skipped"
    rp = _mount("none", "/", None, MS_REC | MS_PRIVATE)
    if rp == OK:
        return True, "fresh mount ns, / made rprivate", rp
    shared = [
        m for m in parse_mountinfo(_read("/proc/self/mountinfo") or "") if "shared:" in m["propagation"]
    ]
    if not shared:
        return True, "fresh mount ns without shared peer groups", rp
    return False, f"{len(shared)} mounts are shared and / cannot be made rprivate", rp


def _child_mounts(allow_new_cgroup: bool, v1_mounted: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ok, how, out["make_rprivate_root"] = _isolated_mount_ns()
    out["isolation"] = how
    if not ok:
        out["skipped"] = "mount namespace could not be isolated"
        return out
    scratch = "/tmp" if os.path.isdir("/tmp") else "/mnt"
    out["scratch"] = _mount("k3snb-probe", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0700")
    if out["scratch"] != OK:
        return out
    j = lambda *p: os.path.join(scratch, *p)  # noqa: E731
    try:
        for d in ("src", "src/sub", "b", "rb", "mv1", "mv2", "ro", "l", "u", "w", "m", "pr", "fuse"):
            os.makedirs(j(d), exist_ok=True)
        out["tmpfs"] = _mount("tmpfs", j("src", "sub"), "tmpfs", 0, "size=1m")
        out["bind"] = _mount(j("src"), j("b"), None, MS_BIND)
        out["rbind"] = _mount(j("src"), j("rb"), None, MS_BIND | MS_REC)
        out["bind_remount_ro"] = (
            _mount(None, j("b"), None, MS_REMOUNT | MS_BIND | MS_RDONLY)
            if out["bind"] == OK
            else "skipped (bind failed)"
        )
        _mount("tmpfs", j("ro"), "tmpfs", 0, "size=1m")
        out["remount_ro"] = _mount(None, j("ro"), None, MS_REMOUNT | MS_RDONLY)
        out["make_shared_submount"] = _mount(None, scratch, None, MS_SHARED)
        mi = parse_mountinfo(_read("/proc/self/mountinfo") or "")
        sm = [m for m in mi if m["mountpoint"] == scratch]
        out["shared_tag_visible"] = bool(sm and "shared:" in sm[-1]["propagation"])
        out["make_slave_submount"] = _mount(None, scratch, None, MS_SLAVE)
        out["make_rshared_root"] = _mount(None, "/", None, MS_REC | MS_SHARED)
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _mount("tmpfs", j("mv1"), "tmpfs", 0, "size=1m")
        out["move"] = _mount(j("mv1"), j("mv2"), None, MS_MOVE)
        out["overlay"] = _mount(
            "overlay", j("m"), "overlay", 0, f"lowerdir={j('l')},upperdir={j('u')},workdir={j('w')}"
        )
        out["pivot_root"] = _pivot_root_test(j("pr"))
        cg: dict[str, str] = {}
        for ctrl in CGROUP_V1_CONTROLLERS:
            if not allow_new_cgroup and ctrl not in v1_mounted:
                cg[ctrl] = "skipped (not mounted on this host; would create a hierarchy)"
                continue
            d = j("cg-" + ctrl)
            os.makedirs(d, exist_ok=True)
            cg[ctrl] = _mount("cgroup", d, "cgroup", 0, ctrl)
            if cg[ctrl] == OK:
                _umount(d)
        d = j("cg2")
        os.makedirs(d, exist_ok=True)
        cg["cgroup2"] = _mount("cgroup2", d, "cgroup2", 0, None)
        if cg["cgroup2"] == OK:
            _umount(d)
        out["cgroup_mount"] = cg
        out["fuse"] = _fuse_test(j("fuse"))
    finally:
        _umount(scratch)
    return out


def _pivot_root_test(new_root: str) -> str:
    # In a grandchild with its own mount ns, so only that process ever sees the new root.
    def inner() -> str:
        res = _rc(_c().unshare(CLONE_NEWNS))
        if res != OK:
            return f"skipped (unshare: {res})"
        r = _mount("tmpfs", new_root, "tmpfs", 0, "size=1m")
        if r != OK:
            return f"skipped (tmpfs: {r})"
        os.mkdir(os.path.join(new_root, "old"))
        return _rc(
            _c().syscall(ctypes.c_long(SYS_PIVOT_ROOT), _b(new_root), _b(os.path.join(new_root, "old")))
        )

    res = _run_in_child(inner, timeout=10)
    return res.get("result") or res.get("error", "?")


def _fuse_test(target: str) -> str:
    try:
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return "open /dev/fuse: " + _oserr(e)
    try:
        res = _mount(
            "k3snb-probe",
            target,
            "fuse",
            MS_NOSUID | MS_NODEV,
            f"fd={fd},rootmode=40000,user_id=0,group_id=0",
        )
        if res == OK:
            _umount(target)
        return res
    finally:
        os.close(fd)


# --- entry point --------------------------------------------------------------------------------
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
