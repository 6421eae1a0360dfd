"""The measurements behind notebooks 04, 06, 09 and 24, as functions (notebooks stay thin and the
tests reach the same code). Each returns plain data (DataFrames, dicts) ready for ``k3snb.record``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ._intercept import intercept
from ._launch import Cmd
from ._rules import Rule
from ._trace import Trace, trace

PROBE_KEYS = ("kernel/cap_last_cap", "kernel/panic", "vm/panic_on_oom", "kernel/keys/root_maxkeys")


def _workdir(runner, purpose: str) -> Path:
    if runner is None:
        from .._state import make_tempdir

        return make_tempdir(purpose)
    from ..runners import get_runner

    return Path(tempfile.mkdtemp(prefix=f"k3snb-{purpose}-", dir=get_runner(runner).workdir))


def _run(runner, cmd: Cmd):
    import subprocess

    if runner is None:
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        return r.returncode, r.stdout, r.stderr
    from ..runners import get_runner

    r = get_runner(runner).run(cmd, timeout=120)
    return r.returncode, r.stdout, r.stderr


# -- 04 ---------------------------------------------------------------------------------------------
def procsys_reach(runner=None, keys=PROBE_KEYS, *, go_binary: str | None = None) -> dict[str, Any]:
    """Read /proc/sys keys from a process tree (shell, subshell, grandchild, python thread, vfork
    child, optionally a static Go binary), plain and under the interceptor with per-file fakes.

    Returns ``{"rows": [...], "stats": {...}, "features": {...}}``; each row is one reader and key
    with the plain and the intercepted outcome.
    """
    from .fakes import fake_procsys

    work = _workdir(runner, "exp04")
    try:
        rules = fake_procsys(work / "fake", keys=[k for k in keys if _known(k)])
        values = {r.path: Path(r.target).read_text().strip() for r in rules}
        readers = {
            "shell": "cat {p}",
            "subshell": "(cat {p})",
            "grandchild": "sh -c \"sh -c 'cat {p}'\"",
            "python-thread": "python3 -c \"import threading;t=threading.Thread(target=lambda: "
                             "print(open('{p}').read().strip()));t.start();t.join()\"",
            "python-subprocess(vfork)": "python3 -c \"import subprocess;subprocess.run(['cat','{p}'])\"",
        }
        if go_binary:
            readers["static-go"] = f"{go_binary} {{p}}"
        script = []
        for name, tpl in readers.items():
            for k in keys:
                p = "/proc/sys/" + k
                script.append(f"echo '@@{name}@@{k}@@'; {tpl.format(p=p)} 2>&1")
        cmd = "\n".join(script)
        _, plain_out, _ = _run(runner, cmd)
        res = intercept(cmd, rules, runner=runner)
        plain = _split(plain_out)
        icept = _split(res.stdout)
        rows = []
        for (name, k), out in plain.items():
            rows.append({"reader": name, "key": k, "plain": out, "intercepted": icept.get((name, k)),
                         "fake_value": values.get("/proc/sys/" + k)})
        return {"rows": rows, "stats": res.stats, "features": res.features, "seccomp": res.meta.get("seccomp"),
                "returncode": res.returncode}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _known(key: str) -> bool:
    from ..probing import procsys_keys

    return key in {k["key"] for k in procsys_keys()}


def _split(out: str) -> dict[tuple[str, str], str]:
    res: dict[tuple[str, str], str] = {}
    cur = None
    for line in out.splitlines():
        if line.startswith("@@") and line.endswith("@@"):
            _, name, key, _ = line.split("@@")
            cur = (name, key)
            res[cur] = ""
        elif cur is not None:
            res[cur] = (res[cur] + "\n" + line).strip()
    return res


# -- 06 ---------------------------------------------------------------------------------------------
STATFS_PY = ("import ctypes;b=ctypes.create_string_buffer(120);ctypes.CDLL(None).statfs(b'{p}',b);"
             "print(hex(int.from_bytes(b.raw[:8],'little')))")


def statfs_views(runner=None, paths=("/", "/proc", "/tmp"), to: str = "ext4", from_type: str = "9p") -> list[dict]:
    """f_type of ``paths`` as ``stat -f`` and Python (ctypes statfs) see them, plain and spoofed."""
    cmd = "; ".join(f"stat -f -c '{p} stat %t' {p}; echo '{p} python' $(python3 -c \"{STATFS_PY.format(p=p)}\")"
                    for p in paths)
    _, plain, _ = _run(runner, cmd)
    res = intercept(cmd, [Rule.statfs(to, from_type=from_type)], runner=runner)
    rows = []
    for a, b in zip(plain.splitlines(), res.stdout.splitlines(), strict=False):
        p, tool, v = a.split()
        rows.append({"path": p, "tool": tool, "plain": _hex(v), "intercepted": _hex(b.split()[-1])})
    return rows


def _hex(v: str) -> str:
    return hex(int(v, 16))


def threads_under_interceptor(go_binary: str, runner=None, timeout: float = 60) -> dict[str, Any]:
    """The Exp 06 hang (S42) check: a multi-threaded static Go program under the interceptor must
    finish (the seed tracer resumed only its first thread)."""
    res = intercept([go_binary, "/proc/self/status"],
                    [Rule.statfs("ext4", from_type="9p")], runner=runner, timeout=timeout)
    threads = next((ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("Threads:")), None)
    return {"returncode": res.returncode, "timed_out": res.timed_out, "threads_seen_by_program": threads,
            "tasks_traced": res.stats.get("tasks"), "wall_s": round(res.meta.get("wall_s", 0), 3)}


# -- 09 ---------------------------------------------------------------------------------------------
def preload_vs_ptrace(runner=None, key: str = "/proc/sys/kernel/cap_last_cap") -> dict[str, Any]:
    """Build an LD_PRELOAD shim and a static Go reader now, then read ``key`` with a dynamic libc
    program (cat) and the Go binary: plain, with LD_PRELOAD, and with the ptrace interceptor."""
    from ._demo import build_preload, build_static_go, is_static

    work = _workdir(runner, "exp09")
    try:
        so = build_preload(work / "build")
        goread = build_static_go(work / "build")
        fake = work / "fake"
        (fake / "kernel").mkdir(parents=True)
        real_rel = key[len("/proc/sys/"):]
        (fake / real_rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / real_rel).write_text("38\n")
        cat = shutil.which("cat") or "/bin/cat"
        env = f"LD_PRELOAD={so} K3SNB_FROM=/proc/sys K3SNB_TO={fake}"
        rows = []
        for name, exe in (("cat (dynamic, libc)", cat), ("goread (static Go)", str(goread))):
            _, plain, perr = _run(runner, f"{exe} {key}")
            _, pre, prerr = _run(runner, f"env {env} {exe} {key}")
            res = intercept([exe, key], [Rule.redirect("/proc/sys/", f"{fake}/")], runner=runner)
            rows.append({"program": name, "static": is_static(exe), "plain": (plain or perr).strip(),
                         "ld_preload": (pre or prerr).strip(), "ptrace": (res.stdout or res.stderr).strip(),
                         "fake_value": "38"})
        return {"rows": rows, "preload_so": so.name, "go_binary_static": is_static(goread)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- 24 ---------------------------------------------------------------------------------------------
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


def first_divergence(a: Trace, b: Trace, names=("host", "gvisor")) -> dict | None:
    return a.diff(b, names=names).first_divergence


def to_json(obj: Any) -> Any:
    """Drop non-JSON parts (Trace objects) from a result dict for ``k3snb.record``."""
    return json.loads(json.dumps({k: v for k, v in obj.items() if not isinstance(v, Trace)},
                                 default=lambda o: o.to_dict(orient="records") if hasattr(o, "to_dict") else str(o)))
