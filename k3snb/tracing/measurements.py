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
from ._trace import Trace

PROBE_KEYS = ("kernel/cap_last_cap", "kernel/panic", "vm/panic_on_oom", "kernel/keys/root_maxkeys")


_RECORDS: dict[Path, Any] = {}  # local work dirs -> their state record (dropped by _remove_workdir)


def _workdir(runner, purpose: str) -> Path:
    if runner is None:
        from .._state import Record, make_tempdir

        # recorded: after kill -9, `k3snb doctor --clean` removes it (a runner's workdir goes with the runner)
        path = make_tempdir(purpose)
        _RECORDS[path] = Record(kind="tmp", id=path.name, paths=[str(path)]).save()
        return path
    from ..runners import get_runner

    return Path(tempfile.mkdtemp(prefix=f"k3snb-{purpose}-", dir=get_runner(runner).workdir))


def _remove_workdir(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    rec = _RECORDS.pop(work, None)
    if rec is not None:
        rec.drop()


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
        _remove_workdir(work)


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
        _remove_workdir(work)


# -- 24 (runc run under the tracer: k3snb.studies.runc) -------------------------------------------
def first_divergence(a: Trace, b: Trace, names=("host", "gvisor")) -> dict | None:
    return a.diff(b, names=names).first_divergence


def to_json(obj: Any) -> Any:
    """Drop non-JSON parts (Trace objects) from a result dict for ``k3snb.record``."""
    return json.loads(json.dumps({k: v for k, v in obj.items() if not isinstance(v, Trace)},
                                 default=lambda o: o.to_dict(orient="records") if hasattr(o, "to_dict") else str(o)))
