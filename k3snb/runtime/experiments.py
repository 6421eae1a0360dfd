"""Measurements the runtime notebooks (25, 29, 21, …) record: container starts per environment,
returned as plain rows free of machine-specific values (ids, temp paths, timings), so stored
notebook outputs re-execute identically elsewhere. Verdicts on them: :mod:`k3snb.studies.runtime`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import K3snbError
from .run import run_container

__all__ = ["environments", "sandbox_envs", "container_matrix", "sanitize", "attempt_row", "containerd_config_probe",
           "snapshotter_matrix", "overlay_probe", "outcome_grid"]

_ID = re.compile(r"k3snb-[a-z]+-[0-9a-f]{10}")
_TIME = re.compile(r'time="[^"]*"\s*')
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")  # a layer digest depends on this machine's busybox build
_NUM = re.compile(r"(containerd-mount|tmpmounts/)\d+")


def sanitize(text: str | None, paths: dict[str, str] | None = None) -> str:
    """Error text without run-specific ids, counters, times and the given paths (stable across machines)."""
    if not text:
        return ""
    for p, name in (paths or {}).items():
        text = text.replace(p, name)
    text = _DIGEST.sub("sha256:<layer>", text)
    return _TIME.sub("", _NUM.sub(r"\1N", _ID.sub("k3snb-<id>", text))).strip()


def environments(runner: str = "gvisor", builds: Sequence[str] = ("2022", "2024"), host: bool = True) -> list[str]:
    """Runner specs to compare: the host (context), then one spec per runsc build for a spec that names
    none (``gvisor`` → ``gvisor:2022``, ``gvisor:2024``), or the spec as given."""
    from ..runners import expand_spec

    envs = ["host"] if host else []
    return envs + [s for s in expand_spec(runner, tuple(builds)) if s not in envs]


def sandbox_envs(envs: Sequence[str]) -> list[str]:
    """The specs among ``envs`` whose runner takes a runsc build (the sandboxes; the host is context)."""
    from ..runners import REGISTRY, parse_spec

    return [e for e in envs if "runsc" in REGISTRY[parse_spec(e)[0]].SPEC_FIELDS]


def attempt_row(env: str, a) -> dict[str, Any]:
    """One Attempt as a stable row (no timings, ids or paths). ``runtime_version``/``containerd``: the
    versions read inside the runner (None: not recorded, e.g. containerd never came up)."""
    sc = a.syscall or {}
    return {"env": env, "runtime": a.runtime, "via": a.via, "snapshotter": a.snapshotter, "ran": a.ok,
            "runtime_version": a.versions.get(a.runtime),
            "containerd": a.versions.get("containerd") if a.via == "containerd" else None,
            "stdout": a.stdout.strip() if a.ok else "", "exit": a.returncode,
            "reached": a.reached[-1] if a.reached else None, "failed_stage": a.failed_stage,
            "error": sanitize(a.error), "signature": a.signature,
            "syscall": f"{sc.get('syscall')} {sc.get('errno')}" + (f" {sc['flags']}" if sc.get("flags") else "")
            if sc else None,
            "cgroups_by_kit": bool(a.cgroups.get("applied_by_kit")),
            "cgroups": ",".join(sorted(a.cgroups.get("mounted") or [])) if a.cgroups.get("applied_by_kit") else "host's",
            "cgroups_refused": ",".join(sorted((a.cgroups.get("refused") or {}).keys())),
            "rules": "; ".join(a.info.get("rules") or []), "net_host": bool(a.info.get("net_host"))}


def container_matrix(envs: Sequence[str], *, runtimes: Sequence[str] = ("runc", "crun"),
                     vias: Sequence[str] = ("containerd", "direct"), args: Sequence[str] = ("echo", "hello"),
                     no_cgroup_probe: bool = True, trace: bool = False) -> list[dict[str, Any]]:
    """A busybox container per (environment, runtime, via), plus (``no_cgroup_probe``) direct runc with
    no cgroup hierarchy in each sandbox. One runner per environment, closed afterwards."""
    from ..runners import resolve

    rows = []
    for env in envs:
        with resolve(env) as runner:
            for via in vias:
                for rt in runtimes:
                    a = run_container(runner, "busybox", list(args), runtime=rt, via=via, trace=trace)
                    rows.append(attempt_row(env, a))
            if no_cgroup_probe and runner.capabilities.own_kernel:
                a = run_container(runner, "busybox", list(args), runtime="runc", via="direct", cgroups=False)
                rows.append({**attempt_row(env, a), "via": "direct, no cgroups"})
    return rows


def containerd_config_probe(envs: Sequence[str]) -> list[dict[str, Any]]:
    """containerd 1.6 with the CRI ``enable_unprivileged_ports/icmp`` toggles on and off: does CRI load?"""
    from ..runners import resolve
    from .containerd import Containerd

    rows = []
    for env in envs:
        with resolve(env) as runner:
            # the sandbox's reported kernel is the same everywhere; the host's is this machine's
            uname = runner.run(["uname", "-r"]).stdout.strip() if runner.capabilities.own_kernel else "(host kernel)"
            for on in (True, False):
                c = Containerd(runner, unprivileged_ports=on, unprivileged_icmp=on)
                try:
                    c.start()
                    df = c.plugins().set_index("id")
                    cri = str(df.loc["cri", "status"]) if "cri" in df.index else "absent"
                    err = [ln for ln in c.logs(400).splitlines()
                           if "invalid plugin config" in ln or ("failed to load plugin" in ln and ".cri" in ln)]
                except K3snbError as e:  # containerd did not come up (exited, no socket): the measurement
                    cri, err = "containerd failed", [str(e)]
                finally:
                    c.stop()
                rows.append({"env": env, "kernel": uname,
                             "unprivileged_ports_icmp": on, "cri_plugin": cri,
                             "containerd": c.version,
                             "error": sanitize(err[-1]) if err else ""})
    return rows


def snapshotter_matrix(envs: Sequence[str], snapshotters: Sequence[str] = ("native", "overlayfs"),
                       state: Sequence[str] = ("tmpfs", "workdir")) -> list[dict[str, Any]]:
    """containerd+runc per snapshotter with its state on tmpfs (/run) or in the runner's workdir (9p in
    gVisor, the host's disk on the host): which unpacks and runs, and what the state's fs is."""
    from ..runners import resolve
    from .containerd import Containerd
    from .run import ensure_cgroups
    from .stages import Attempt

    rows = []
    for env in envs:
        with resolve(env) as runner, ensure_cgroups(runner, "auto"):
            for where in state:
                for snap in snapshotters:
                    sd = None
                    if where == "workdir":
                        sd = str(runner.workdir / f"k3snb-state-{snap}")  # tagged: the reaper may remove it
                    fs = runner.run(["stat", "-f", "-c", "%T", str(runner.workdir) if sd else "/run"]).stdout.strip()
                    a = Attempt(runner=env, runtime="runc", via="containerd", image="busybox", args=["echo", "hi"],
                                snapshotter=snap)
                    c = Containerd(runner, snapshotter=snap, state_dir=sd)
                    try:
                        try:
                            c.start()
                        except K3snbError as e:  # containerd did not come up: the stage that failed
                            a.fail("runtime_up", str(e))
                        else:
                            c.run("busybox", ["echo", "hi"], attempt=a)
                    finally:
                        c.stop()
                    a.finish()
                    row = attempt_row(env, a)
                    rows.append({"env": env, "state_on": where, "state_fs": fs, "snapshotter": snap,
                                 "containerd": row["containerd"], "runc": row["runtime_version"],
                                 "ran": row["ran"], "failed_stage": row["failed_stage"],
                                 "error": sanitize(row["error"], {str(runner.workdir): "<workdir>"}),
                                 "signature": row["signature"]})
    return rows


def overlay_probe(envs: Sequence[str]) -> list[dict[str, Any]]:
    """mount(8) an overlay with its lower dir on the runner's workdir (9p in gVisor) or on tmpfs; the
    upper and work dirs always on tmpfs (S12/S13)."""
    from ..runners import resolve

    rows = []
    for env in envs:
        with resolve(env) as runner:
            for lower_on, upper_on in (("workdir", "tmpfs"), ("tmpfs", "tmpfs"), ("workdir", "workdir")):
                w = str(runner.workdir)
                lower = f"{w}/ovl-lower" if lower_on == "workdir" else "/tmp/ovl-lower"
                up = f"{w}/ovl" if upper_on == "workdir" else "/tmp/ovl"
                script = (f"mkdir -p {lower} {up}-u {up}-w /tmp/ovl-m && echo low > {lower}/f && "
                          f"stat -f -c %T {lower} && mount -t overlay overlay "
                          f"-o lowerdir={lower},upperdir={up}-u,workdir={up}-w /tmp/ovl-m && "
                          f"cat /tmp/ovl-m/f && echo up > /tmp/ovl-m/g && cat {up}-u/g")
                r = runner.run(["sh", "-c", script])
                runner.run(["sh", "-c", f"umount /tmp/ovl-m; rm -rf {lower} {up}-u {up}-w /tmp/ovl-m"])
                out = r.stdout.split()
                rows.append({"env": env, "lower_on": lower_on, "upper_on": upper_on, "lower_fs": out[0] if out else None,
                             "mounted": r.ok, "read_lower": r.ok and "low" in out, "wrote_upper": r.ok and "up" in out,
                             "error": sanitize(r.stderr.strip().splitlines()[0] if r.stderr.strip() else "",
                                               {w: "<workdir>"})})
    return rows


def outcome_grid(rows: Sequence[Mapping[str, Any]]):
    """(via, runtime) × environment: ``ran`` or the failing stage — the matrix at a glance."""
    import pandas as pd

    df = pd.DataFrame(rows)
    df["result"] = [("ran" if r else f"{s} ✗") for r, s in zip(df["ran"], df["failed_stage"], strict=True)]
    return df.pivot(index=["via", "runtime"], columns="env", values="result").fillna("")


# -- notebook 26: Exp 26's namespace progression, as OCI config edits ---------------------------------
DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
                "CAP_KILL", "CAP_AUDIT_WRITE"]


def _add_ns(cfg: dict, kind: str) -> None:
    cfg["linux"]["namespaces"].append({"type": kind})


def _caps(cfg: dict) -> None:
    cfg["process"]["capabilities"] = {k: list(DEFAULT_CAPS)
                                      for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}


def ns_minimal(cfg: dict) -> None:
    """1: pid, ipc, uts, mount; no capabilities (the kit's default bundle)."""


def ns_network(cfg: dict) -> None:
    """2: + a network namespace."""
    _add_ns(cfg, "network")


def ns_user(cfg: dict) -> None:
    """3: + a user namespace with 1:1 uid/gid maps."""
    _add_ns(cfg, "user")
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]


def ns_cgroup(cfg: dict) -> None:
    """4: + a cgroup namespace."""
    _add_ns(cfg, "cgroup")


def ns_caps(cfg: dict) -> None:
    """5: capabilities only (container default set in all five sets, ambient included)."""
    _caps(cfg)


def ns_k3s_like(cfg: dict) -> None:
    """6: "full k3s-like": capabilities, noNewPrivileges, read-only sysfs, cgroup ns, devices deny-all."""
    _caps(cfg)
    _add_ns(cfg, "cgroup")
    cfg["process"]["noNewPrivileges"] = True
    cfg["mounts"].append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                          "options": ["nosuid", "noexec", "nodev", "ro"]})
    cfg["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}


def ns_caps_cgroup(cfg: dict) -> None:
    """7: capabilities + a cgroup namespace."""
    _caps(cfg)
    _add_ns(cfg, "cgroup")


NAMESPACE_CASES = {"1 minimal": ns_minimal, "2 +network": ns_network, "3 +user": ns_user, "4 +cgroup ns": ns_cgroup,
                   "5 capabilities": ns_caps, "6 k3s-like": ns_k3s_like, "7 caps + cgroup ns": ns_caps_cgroup}


def namespace_progression(envs: Sequence[str], runtimes: Sequence[str] = ("runc", "crun")) -> list[dict[str, Any]]:
    """Exp 26's seven OCI configs, each run directly by each runtime in each environment (cgroup v1 by the
    kit where the runner has none; crun's known fixes applied, as in run_container). The container lists
    ``/proc/self/ns``, so a config that "ran" shows which namespaces it really got. Environments run in
    parallel (one runner each)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(envs) or 1) as pool:
        parts = list(pool.map(lambda env: _progression_in(env, runtimes), envs))
    return [r for part in parts for r in part]


def _progression_in(env: str, runtimes: Sequence[str]) -> list[dict[str, Any]]:
    from ..runners import resolve
    from .run import auto_rules, ensure_cgroups, run_direct

    rows = []
    with resolve(env) as runner, ensure_cgroups(runner, "v1" if "crun" in runtimes else "auto") as cg:
        rules = {rt: auto_rules(runner, rt) for rt in runtimes}
        for rt in runtimes:
            for case, edit in NAMESPACE_CASES.items():
                a = run_direct(runner, "busybox", ["ls", "/proc/self/ns"], runtime=rt, edit=edit, rules=rules[rt])
                a.cgroups = cg
                r = attempt_row(env, a)
                rows.append({"env": env, "runtime": rt, "runtime_version": r["runtime_version"], "case": case,
                             "ran": r["ran"],
                             # only the cgroup entry: the host kernel's full list varies by version
                             "cgroup_ns": ("cgroup" in a.stdout.split()) if a.ok else None,
                             "failed_stage": r["failed_stage"], "signature": r["signature"], "error": r["error"]})
    return rows


# -- notebook 27: is runc's cap_last_cap patch needed? ---------------------------------------------------
CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"


def cap_last_cap_reads(trace) -> list[dict[str, Any]]:
    """Every open of cap_last_cap in a trace: which program (runc, or a child such as runc init) and its
    errno (None = read)."""
    d = trace.syscalls()
    d = d[d.path.fillna("").str.endswith("cap_last_cap")]
    # the first process is runc itself; runc init runs from a cloned binary whose exe path varies
    return [{"exe": "runc" if str(r.exe).endswith("/runc") else "child of runc",
             "errno": None if r.errno != r.errno else r.errno} for r in d.itertuples()]


def cap_last_cap_cases(envs: Sequence[str]) -> list[dict[str, Any]]:
    """Per environment: the key's value, then runc running Exp 26's "capabilities" config (the container's
    default capability set in all five sets) as is, with the key hidden (the interceptor fails its open
    with ENOENT, like runsc 2022), and with it faked to 40 (what Exp 27's patch falls back to)."""
    from ..runners import resolve
    from ..tracing import Rule
    from .run import ensure_cgroups, run_direct

    variants = {"as is": [], "key hidden (ENOENT)": [Rule.fail("ENOENT", path=CAP_LAST_CAP)],
                "key faked to 40": [Rule.fake(CAP_LAST_CAP, "40")]}
    rows = []
    for env in envs:
        with resolve(env) as runner, ensure_cgroups(runner, "auto"):
            key = runner.run(["cat", CAP_LAST_CAP])
            version = runner.run(["runc", "--version"]).stdout.split("\n")[0].replace("runc version ", "")
            for name, rules in variants.items():
                a = run_direct(runner, "busybox", ["sh", "-c", "grep CapEff /proc/self/status"], runtime="runc",
                               edit=ns_caps, rules=rules, inspect=cap_last_cap_reads)
                reads = a.info.get("inspect") or []
                rows.append({"env": env, "runc": version, "key": key.stdout.strip() if key.ok else "absent",
                             "variant": name, "ran": a.ok, "cap_eff": a.stdout.split()[-1] if a.ok else "",
                             "reads": ", ".join(f"{r['exe']}:{r['errno'] or 'ok'}" for r in reads),
                             "failed_stage": a.failed_stage, "signature": a.signature, "error": sanitize(a.error)})
    return rows
