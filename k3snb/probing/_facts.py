"""Flatten a collector dict (see :mod:`._collect`) into ``(fact, value, detail)`` rows.

Values are short and comparable across environments ("ok", "EINVAL", "absent", "9p", True), so
``diff`` can line them up; the ``detail`` column carries the evidence (full errno text, mount
options, the method used to judge writability).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Fact(NamedTuple):
    """One probed fact: ``fact`` name (dotted group), short ``value``, ``detail``/evidence text."""

    fact: str
    value: Any
    detail: str = ""


def short(result: Any) -> Any:
    """``"EINVAL: Invalid argument"`` → ``"EINVAL"``; ``"ok"`` and non-strings pass through."""
    if isinstance(result, str) and ":" in result and result.split(":", 1)[0].isupper():
        return result.split(":", 1)[0]
    return result


def _detail(result: Any) -> str:
    return "" if result in ("ok", None) or result == short(result) else str(result)


# Keys whose value changes on every boot or sandbox; their fact shows only the access.
VOLATILE = frozenset({"kernel/random/boot_id"})


def proc_sys_value(rec: dict[str, Any], key: str = "") -> str:
    if not rec.get("present"):
        return "absent"
    if not rec.get("readable"):
        return "unreadable"
    value = "(per boot)" if key in VOLATILE else rec.get("value")
    return f"{value} [{'rw' if rec.get('writable') else 'ro'}]"


def _device(rec: dict[str, Any] | None) -> tuple[str, str]:
    if not rec or not rec.get("present"):
        return "absent", ""
    if rec.get("open") == "ok":
        return "present", f"char {rec.get('rdev', '?')}, opens"
    return f"present, open {short(rec.get('open'))}", str(rec.get("open"))


def facts_from(d: dict[str, Any]) -> list[Fact]:
    """All facts of one probe, in a stable order (groups: kernel, sandbox, fs, proc_sys, …)."""
    out: list[Fact] = []
    add = lambda name, value, detail="": out.append(Fact(name, value, str(detail)))  # noqa: E731

    # kernel and sandbox identity
    add("kernel.release", d.get("kernel_release"), d.get("kernel_version", ""))
    add("kernel.machine", d.get("machine"))
    sb = d.get("sandbox") or {}
    add("sandbox.kind", sb.get("kind"), "; ".join(sb.get("evidence", [])))
    runner = d.get("runner") or {}
    add("runner.kind", runner.get("kind"), " ".join(runner.get("flags", []) or []))
    add("runsc.version", d.get("runsc_version"), runner.get("runsc", ""))

    # filesystems and mounts
    root = d.get("root_mount") or {}
    add("rootfs.type", d.get("root_fstype"),
        f"{root.get('source', '')} {root.get('fstype', '')} {root.get('super_options', '')}".strip())
    add("rootfs.magic", d.get("root_fsmagic"), "statfs(\"/\").f_type")
    add("rootfs.propagation", root.get("propagation"), "mountinfo optional fields of /")
    for path, st in (d.get("statfs") or {}).items():
        if path == "/":
            continue
        add(f"fs.{path}", st.get("name") if st.get("present") else "absent", st.get("magic") or "")
    mounts = d.get("mounts") or {}
    add("mounts.count", mounts.get("count"))
    add("mounts.fstypes", ",".join(mounts.get("fstypes", [])))
    fsys = set(d.get("filesystems") or [])
    for name in ("overlay", "fuse", "9p", "cgroup", "cgroup2", "tmpfs"):
        add(f"filesystems.{name}", name in fsys, "listed in /proc/filesystems")

    # /proc/sys
    add("proc_sys.files", d.get("proc_sys_files"), "number of files under /proc/sys")
    ps = d.get("proc_sys") or {}
    for key, rec in ps.items():
        detail = f"mode {rec.get('mode')}; writability by {rec.get('method')}" if rec.get("present") else ""
        if rec.get("error") and rec.get("present"):
            detail += f"; {rec['error']}"
        add(f"proc_sys.{key}", proc_sys_value(rec, key), detail)

    # devices
    v, det = _device(d.get("dev_kmsg"))
    add("dev.kmsg", v, det)
    for name, rec in (d.get("devices") or {}).items():
        if name == "null":
            continue
        v, det = _device(rec)
        add(f"dev.{name}", v, det)

    # capabilities
    caps = d.get("capabilities") or {}
    add("caps.effective", caps.get("CapEff"), ",".join(caps.get("effective", [])))
    add("caps.bounding", caps.get("CapBnd"), ",".join(caps.get("bounding", [])))
    add("caps.missing", ",".join(caps.get("missing_effective", [])) or "none", "known caps not in CapEff")
    eff = set(caps.get("effective", []))
    for c in ("sys_admin", "net_admin", "net_raw", "sys_ptrace", "sys_resource", "mknod"):
        add(f"caps.{c}", c in eff, "in CapEff")

    # cgroups
    cg = d.get("cgroup") or {}
    add("cgroup.version", cg.get("version"),
        f"v1 mounts: {len(cg.get('v1_mounts', []))}, v2 mounts: {','.join(cg.get('v2_mounts', [])) or '-'}")
    fs = cg.get("fs") or {}
    add("cgroup.fs", fs.get("name"), fs.get("magic") or "")
    ctrls = cg.get("controllers") or {}
    add("cgroup.controllers", ",".join(k for k, v in ctrls.items() if v.get("enabled")) or "none",
        "enabled in /proc/cgroups")
    add("cgroup.ns", cg.get("ns_cgroup"), "/proc/self/ns/cgroup exists (runc's cgroupns check)")
    mo = d.get("mount_ops") or {}
    for ctrl, res in (mo.get("cgroup_mount") or {}).items():
        add(f"cgroup.mount.{ctrl}", short(res) if not str(res).startswith("skipped") else "skipped", _detail(res))

    # namespaces and identity
    add("ns.available", ",".join(d.get("namespaces") or []), "/proc/self/ns")
    us = d.get("userns") or {}
    add("userns.uid_map", us.get("uid_map"), "identity map = initial user namespace")
    add("userns.in_user_namespace", us.get("in_user_namespace"),
        "kubelet RunningInUserNS(); KubeletInUserNamespace only acts when true")
    add("userns.unshare", short(us.get("unshare_user")), _detail(us.get("unshare_user")))

    # tracing and syscall surfaces
    pt = d.get("ptrace") or {}
    add("ptrace.traceme", short(pt.get("traceme")), _detail(pt.get("traceme")))
    add("ptrace.syscall_stop", short(pt.get("syscall_stop")), _detail(pt.get("syscall_stop")))
    sc = d.get("seccomp") or {}
    add("seccomp.mode", sc.get("mode"), "Seccomp: in /proc/self/status")
    add("seccomp.filter_install", short(sc.get("filter_install")),
        f"mode after install: {sc.get('mode_after')}")
    acts = sc.get("actions_avail") or {}
    for a in ("trace", "user_notif"):
        add(f"seccomp.ret_{a}", short(acts.get(a)), "SECCOMP_GET_ACTION_AVAIL " + str(acts.get(a)))
    st = d.get("statx") or {}
    add("statx.plain", short(st.get("plain")), _detail(st.get("plain")))
    add("statx.at_no_automount", short(st.get("at_no_automount")),
        "statx(\"/\", AT_NO_AUTOMOUNT) as GNU coreutils calls it; " + str(st.get("at_no_automount")))
    pr = d.get("prctl") or {}
    add("prctl.child_subreaper", short(pr.get("subreaper")), "PR_SET_CHILD_SUBREAPER (crun); "
        + str(pr.get("subreaper")))
    add("inotify.init", short(d.get("inotify")), _detail(d.get("inotify")))

    # networking
    ipt = d.get("iptables") or {}
    add("net.raw_socket", short(ipt.get("raw_socket")), ipt.get("netns", ""))
    add("net.netlink_netfilter", short(ipt.get("netlink_netfilter")), _detail(ipt.get("netlink_netfilter")))
    for variant in ("legacy", "nft"):
        for table in ("filter", "nat"):
            res = (ipt.get(variant) or {}).get(table)
            add(f"iptables.{variant}.{table}", "ok" if res == "ok" else ("failed" if res else None),
                f"iptables-{variant} -t {table} -S: {res}; {ipt.get('netns', '')}")

    # mount operations OCI runtimes and containerd need
    add("mount.isolation", "ok" if "skipped" not in mo else "skipped", mo.get("isolation", mo.get("error", "")))
    for op in ("tmpfs", "bind", "rbind", "bind_remount_ro", "remount_ro", "make_rprivate_root",
               "make_rshared_root", "make_shared_submount", "make_slave_submount", "move", "pivot_root",
               "overlay", "fuse"):
        res = mo.get(op)
        add(f"mount.{op}", short(res) if res is not None else None, _detail(res))
    return out
