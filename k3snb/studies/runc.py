"""``runc run`` under the tracer, for notebooks 09 and 24: which process (``runc``, ``runc init``, the
container's own process) read ``cap_last_cap``, where the read went and how it ended. Lives with the studies
because it composes runtime bundles, workarounds and the tracer (layers below it).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..tracing import Rule, Trace, trace


def runc_reach(runner, *, host_fake: str = "39", rootfs_fake: str | None = "38", redirect: bool = True,
               env: dict[str, str] | None = None, timeout: float = 120) -> dict[str, Any]:
    """``runc run`` a busybox bundle whose process reads cap_last_cap, traced and intercepted.

    The redirect target exists twice with different values: in the runner (``host_fake``) and at
    the same path inside the bundle's rootfs (``rootfs_fake``). Which value the container prints
    shows in which mount namespace the rewritten path was resolved; the trace rows show which
    processes (runc, ``runc init`` stages, the container's cat) were reached. With
    ``rootfs_fake=None`` the target exists only outside the container: the seed interceptor's
    situation (seed-catalog §8.4, H1). ``redirect=False`` traces without the rule; ``env`` is given to
    runc (e.g. ``LD_PRELOAD``; ``{fake_dir}`` in a value becomes the directory holding the host target). ``roles`` sums the trace up per process role (:func:`process_roles`).
    """
    from ..runners import get_runner
    from ..runtime import write_bundle

    r = get_runner(runner)
    runc = shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not runc:
        from ..errors import MissingDependency

        raise MissingDependency("runc not found", hint="apt-get install runc")
    base = Path(tempfile.mkdtemp(prefix="k3snb-exp24-", dir=r.workdir))
    cid = base.name
    # runc's state wants a tmpfs: where /run is private to the runner, use it
    state = f"/run/{cid}" if r.capabilities.private_tmp else str(base / "state")
    fake = base / "fake" / "cap_last_cap"
    try:
        bundle = write_bundle(base / "bundle", ["cat", "/proc/sys/kernel/cap_last_cap", str(fake)])
        cfg = json.loads((bundle / "config.json").read_text())
        # no tmpfs on /tmp in the container: the rootfs copy of the target must stay visible
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/tmp"]
        (bundle / "config.json").write_text(json.dumps(cfg, indent=1))
        fake.parent.mkdir(parents=True)
        fake.write_text(host_fake + "\n")
        if rootfs_fake is not None:
            inside = bundle / "rootfs" / str(fake).lstrip("/")
            inside.parent.mkdir(parents=True, exist_ok=True)
            inside.write_text(rootfs_fake + "\n")
        argv = [runc, f"--root={state}", "run", "--bundle", str(bundle), cid]
        env = {k: v.replace("{fake_dir}", str(fake.parent)) for k, v in (env or {}).items()} or None
        plain = r.run(argv, timeout=timeout, env=env)
        r.run([runc, f"--root={state}", "delete", "--force", cid], timeout=30)
        t = trace(argv, runner=r, syscalls=["openat", "execve", "execveat", "clone", "clone3", "unshare", "setns",
                                            "pivot_root", "mount"],
                  rules=[Rule.redirect("/proc/sys/kernel/cap_last_cap", str(fake))] if redirect else [],
                  env=env, timeout=timeout)
        r.run([runc, f"--root={state}", "delete", "--force", cid], timeout=30)
        return {"plain": {"returncode": plain.returncode, "stdout": plain.stdout.strip(),
                          "stderr": plain.stderr.strip()[-600:]},
                "traced": {"returncode": t.returncode, "stdout": t.stdout.strip(), "stderr": t.stderr.strip()[-600:]},
                "reach": reach_table(t), "roles": process_roles(t, Path((env or {}).get("LD_PRELOAD", "")).name or None),
                "trace": t, "host_fake": host_fake, "rootfs_fake": rootfs_fake if redirect else None,
                "redirect": redirect, "runc_version": _runc_version(r, runc)}
    finally:
        from ..workarounds import _ops

        try:
            r.run_python(_ops.umount_under, [str(base)], timeout=60)
            r.run_python(_ops.cleanup_dir, state, timeout=60)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def reach_table(t: Trace):
    """Per process: executable, reads of cap_last_cap (and whether rewritten), the thread name at
    the rewrite (``runc:[2:INIT]`` …), outcome."""
    import pandas as pd

    d = t.df
    hits = d[(d.event == "syscall") & d.path.fillna("").str.endswith("/cap_last_cap")]
    rows = []
    for (pid, exe), g in hits.groupby(["pid", hits.exe.fillna("?")], sort=False):
        det = g.detail.dropna()
        comm = det.str.extract(r"\[comm ([^\]]+)\]")[0].dropna()
        rows.append({"pid": int(pid), "parent": int(g.parent.iloc[0]), "exe": exe,
                     "comm": comm.iloc[0] if len(comm) else None, "reads": len(g), "rewritten": int(len(det)),
                     "errno": ",".join(sorted(set(g.errno.dropna()))) or "ok"})
    return pd.DataFrame(rows, columns=["pid", "parent", "exe", "comm", "reads", "rewritten", "errno"])


def _runc_version(r, runc: str) -> str:
    out = r.run([runc, "--version"], timeout=30).stdout.split()
    return out[2] if len(out) > 2 and out[:2] == ["runc", "version"] else "unknown"


def process_roles(t: Trace, shim: str | None = None):
    """The trace of a ``runc run`` summed up per process role, so an error is attributed to the process
    that produced it: ``runc`` (the command run), ``runc init`` (``/proc/self/exe init`` and the nsexec
    stages it forks, until they exec the container's program) and ``container process``.

    Per role: how many processes, whether they opened the LD_PRELOAD ``shim`` (file name), their reads of
    cap_last_cap (the path as passed to the kernel, rewritten by the tracer or not) and the errnos.
    """
    import pandas as pd

    d = t.df
    parent: dict[int, int] = {}
    for pid, par in zip(d.pid, d.parent, strict=False):
        if pid != par:
            parent.setdefault(int(pid), int(par))
    init_roots = set(d[(d.event == "syscall") & (d.syscall == "execve") & (d.path == "/proc/self/exe")].pid)

    def in_init(pid: int) -> bool:
        seen = set()
        while pid not in seen:
            if pid in init_roots:
                return True
            seen.add(pid)
            if pid not in parent:
                return False
            pid = parent[pid]
        return False

    exe = d.exe.fillna("")
    is_runc = exe.str.endswith("/runc") | exe.isin(["", "/"])
    role = [("runc init" if in_init(int(p)) else "runc") if rc else "container process"
            for p, rc in zip(d.pid, is_runc, strict=False)]
    d = d.assign(role=role)
    rows = []
    for name in ("runc", "runc init", "container process"):
        g = d[d.role == name]
        if g.empty:
            continue
        sc = g[g.event == "syscall"]
        cap = sc[sc.path.fillna("").str.endswith("/cap_last_cap") & (sc.syscall == "openat")]
        rows.append({
            "role": name, "processes": int(g.pid.nunique()),
            "shim_loaded": None if shim is None else bool(
                ((sc.syscall == "openat") & sc.path.fillna("").str.endswith("/" + shim) & sc.errno.isna()).any()),
            "cap_last_cap_reads": len(cap),
            "read_paths": sorted({"/proc/sys/kernel/cap_last_cap" if p == "/proc/sys/kernel/cap_last_cap"
                                  else "elsewhere (" + Path(p).parent.name + "/cap_last_cap)" for p in cap.path}),
            "rewritten": int(cap.detail.notna().sum()),
            "errno": ",".join(sorted(set(cap.errno.dropna()))) or ("ok" if len(cap) else "-"),
        })
    return pd.DataFrame(rows, columns=["role", "processes", "shim_loaded", "cap_last_cap_reads", "read_paths",
                                       "rewritten", "errno"])
