"""Measurements for the cgroup-faking notebooks (07, 10, 11, 17): what a fake cgroup tree or file looks
like to ``stat -f`` and to runc / crun, per environment. Rows are plain and machine-independent (no ids,
pids, temp paths or timings). Verdicts on them: :mod:`k3snb.studies.cgroupfs`.

Every function takes runner specs (``host``, ``gvisor:2022``, ``gvisor:2024``), opens one runner per
spec, gives it the kit's pure cgroup v1 layout (``ensure_cgroups(runner, "v1")``) and undoes every mount
and cgroup directory it made before the runner closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
from collections.abc import Sequence
from typing import Any

from .._fsmagic import FS_MAGIC
from .._state import new_id
from .._system import MS_BIND, is_mountpoint, mount, statfs_type, umount
from ..workarounds._ops import write_fake_controller

__all__ = ["environments", "FAKER_FILES", "openat2_errno", "cgroup_dir_probe", "fake_control_file", "fake_tree",
           "runtime_versions", "sanitize"]

ROOT = "/sys/fs/cgroup"
# seed-catalog §7.4: the 21 files Exp 17's inotify faker writes into every new cgroup directory
FAKER_FILES = {
    "cgroup.procs": "", "tasks": "", "memory.limit_in_bytes": "9223372036854771712",
    "memory.kmem.limit_in_bytes": "9223372036854771712", "memory.usage_in_bytes": "0",
    "memory.max_usage_in_bytes": "0", "memory.failcnt": "0", "memory.kmem.usage_in_bytes": "0",
    "memory.stat": "cache 0\nrss 0\nmapped_file 0", "memory.oom_control": "0", "cpu.cfs_period_us": "100000",
    "cpu.cfs_quota_us": "-1", "cpu.shares": "1024", "cpu.stat": "0", "cpuset.cpus": "0-3", "cpuset.mems": "0",
    "cgroup.clone_children": "0", "cgroup.sane_behavior": "0", "notify_on_release": "0", "release_agent": "0",
    "memory.soft_limit_in_bytes": "0",
}
_PID = re.compile(r"failed to write \\?\"?\d+")
_ID = re.compile(r"k3snb-[a-z]+-[0-9a-f]{6,}")
_TIME = re.compile(r'time="[^"]*"\s*')


def sanitize(text: str | None, paths: dict[str, str] | None = None) -> str:
    """Error text without run-specific ids, pids, times and the given paths (stable across machines)."""
    text = text or ""
    for p, name in (paths or {}).items():
        text = text.replace(p, name)
    text = _PID.sub("failed to write <pid>", text)
    return _TIME.sub("", _ID.sub("<id>", text)).strip()


def _fs(path: str) -> str:
    t = statfs_type(path)
    return "?" if t is None else f"{FS_MAGIC.get(t, 'unknown')} ({t:#x})"


# -- functions run inside the runner (runner.run_python) -------------------------------------------
def openat2_errno(path: str = ROOT) -> int:
    """0 when ``openat2(2)`` opens ``path`` (O_PATH|O_DIRECTORY), else its errno (ENOSYS: not implemented).
    runc checks a cgroup file's fstatfs magic only when openat2 is unavailable (its fallback)."""
    libc = ctypes.CDLL(None, use_errno=True)
    how = (ctypes.c_uint64 * 3)(os.O_PATH | os.O_DIRECTORY, 0, 0)
    fd = libc.syscall(437, -100, path.encode(), ctypes.byref(how), ctypes.sizeof(how))  # SYS_openat2 (x86_64)
    if fd < 0:
        return ctypes.get_errno()
    os.close(fd)
    return 0


def cgroup_dir_probe(name: str) -> list[dict[str, Any]]:
    """Per mounted v1 hierarchy under /sys/fs/cgroup: mkdir a child cgroup, count the control files the
    kernel put in it, try to create a new regular file there (Exp 17's faker did; S22), rmdir it."""
    out = []
    for c in sorted(os.listdir(ROOT)):
        d = os.path.join(ROOT, c)
        if os.path.islink(d) or not os.path.isdir(d) or statfs_type(d) != 0x27E0EB:
            continue
        sub = os.path.join(d, name)
        row: dict[str, Any] = {"hierarchy": c, "fs": _fs(d)}
        try:
            os.mkdir(sub)
        except OSError as e:
            out.append({**row, "mkdir": errno.errorcode.get(e.errno or 0, str(e.errno)), "files": None,
                        "has_cgroup_procs": None, "create_file": None})
            continue
        try:
            files = os.listdir(sub)
            try:
                with open(os.path.join(sub, "k3snb-fake-file"), "w") as f:
                    f.write("0\n")
                created = "ok"
            except OSError as e:
                created = errno.errorcode.get(e.errno or 0, str(e.errno))
            row.update(mkdir="ok", files=len(files), has_cgroup_procs="cgroup.procs" in files, create_file=created)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(sub, "k3snb-fake-file"))
            with contextlib.suppress(OSError):
                os.rmdir(sub)
        out.append(row)
    return out


def _shadow_dir(name: str, controller: str, files: dict[str, str]) -> dict[str, Any]:
    """Exp 17's faker, winning the race: the container's cgroup dir of one controller gets a tmpfs on top
    holding the faker's files (the real cgroup dir stays underneath, so mountinfo still says cgroup)."""
    d = os.path.join(ROOT, controller, name)
    os.makedirs(d, exist_ok=True)
    mount("tmpfs", d, "tmpfs", 0, "mode=0755,size=1m")
    for fname, content in files.items():
        with open(os.path.join(d, fname), "w") as f:
            f.write(content + "\n" if content else "")
    return {"dir": d, "fs": _fs(os.path.join(d, "cgroup.procs"))}


def _unshadow_dir(d: str) -> None:
    with contextlib.suppress(OSError):
        umount(d)
    with contextlib.suppress(OSError):
        os.rmdir(d)


def _bind_fake_tree(source: str, controllers: list[str]) -> dict[str, Any]:
    """Exps 10/11: a static fake tree (seed-catalog §7.1 files) under ``source``, then per controller
    umount the real hierarchy at /sys/fs/cgroup/<c> and bind-mount the fake directory there."""
    os.makedirs(source, exist_ok=True)
    res: dict[str, Any] = {"binds": [], "umounted": [], "errors": {}, "source_fs": _fs(source)}
    for c in controllers:
        src = write_fake_controller(source, c)
        dst = os.path.join(ROOT, c)
        real = os.path.realpath(dst)
        try:
            if os.path.isdir(real) and is_mountpoint(real):
                umount(real)
                res["umounted"].append(os.path.basename(real))
            if os.path.islink(dst):
                os.unlink(dst)
            os.makedirs(dst, exist_ok=True)
            mount(src, dst, None, MS_BIND)
            res["binds"].append(dst)
        except OSError as e:
            res["errors"][c] = str(e)
    return res


def _read_tree(controllers: list[str]) -> list[dict[str, Any]]:
    out = []
    for c in controllers:
        d = os.path.join(ROOT, c)
        key = {"cpu": "cpu.shares", "cpuacct": "cpuacct.usage_percpu", "memory": "memory.limit_in_bytes"}.get(c)
        try:
            with open(os.path.join(d, key or "")) as f:
                val = f.read().strip() if key else None
        except OSError as e:
            val = f"error: {e.strerror}"
        try:
            n = len(os.listdir(d))
        except OSError:
            n = None
        out.append({"controller": c, "fs": _fs(d), "file": key, "value": val, "files": n})
    return out


def _unbind(paths: list[str]) -> None:
    for p in reversed(paths):
        with contextlib.suppress(OSError):
            umount(p)


# -- measurements (called in the notebook's kernel) -------------------------------------------------
def environments(runner: str = "gvisor", builds: Sequence[str] = ("2022", "2024")) -> list[str]:
    """Runner specs to compare: the host (context), then each runsc build ``runner`` names or implies."""
    from ..runners import expand_spec

    return list(dict.fromkeys(["host", *expand_spec(runner, runsc=tuple(builds))]))


def runtime_versions(runtimes: Sequence[str] = ("runc", "crun"), envs: Sequence[str] = ()) -> dict[str, str]:
    """What ran: the first ``--version`` line of each runtime binary (e.g. ``runc version 1.1.5+ds1``) and,
    per gVisor environment in ``envs``, its runsc version (``gvisor:2024`` -> ``runsc 0.0~20240729.0``)."""
    from .._system import program_output
    from ..runners import parse_spec
    from ..runners.runsc import find_runsc, runsc_version
    from .containerd import runtime_binary

    out = {}
    for rt in runtimes:
        _rc, text, _err = program_output(runtime_binary(rt), ("--version",))
        out[rt] = text.splitlines()[0] if text.strip() else "?"
    for env in envs:
        build = parse_spec(env)[1].get("runsc")
        if build:
            out[env] = f"runsc {runsc_version(find_runsc(build))}"
    return out


def _set_cgroups_path(path: str, cfg: dict) -> None:
    cfg["linux"]["cgroupsPath"] = path


def _run(runner, rt: str, rules, cgroups_path: str | None = None) -> dict[str, Any]:
    """busybox ``echo hello`` run directly by ``rt``; the outcome as a stable row."""
    from .run import run_direct

    edit = functools.partial(_set_cgroups_path, cgroups_path) if cgroups_path else None
    a = run_direct(runner, "busybox", ["echo", "hello"], runtime=rt, edit=edit, rules=rules)
    return {"ran": a.ok, "failed_stage": a.failed_stage, "signature": a.signature,
            "error": sanitize(a.error).replace("<id>", "<cgroup>")}


def fake_control_file(envs: Sequence[str], runtimes: Sequence[str] = ("runc", "crun"),
                      controller: str = "memory") -> dict[str, list[dict[str, Any]]]:
    """Exp 17 / S21: each runtime runs busybox directly twice per environment — with real cgroupfs
    directories, and with the ``controller`` directory of the container's cgroup shadowed by a tmpfs that
    holds Exp 17's faker files (the faker won the race). Also records whether ``openat2`` works, which
    decides whether runc checks the file's fstatfs magic.

    Returns ``{"runs": [...], "dirs": [...]}``; ``dirs``: per mounted v1 hierarchy, is a new cgroup
    directory populated with control files, and can a regular file be created in it
    (:func:`cgroup_dir_probe`; Exp 17's faker log, S22)."""
    from ..runners import resolve
    from .run import auto_rules, ensure_cgroups

    rows, dirs = [], []
    for env in envs:
        with resolve(env) as runner, ensure_cgroups(runner, "v1"):
            for r in runner.run_python(cgroup_dir_probe, new_id("k3snb-probe-"), timeout=60):
                dirs.append({"env": env, **r})
            o2 = runner.run_python(openat2_errno, timeout=60)
            o2s = "yes" if o2 == 0 else errno.errorcode.get(o2, str(o2))
            for rt in runtimes:
                rules = auto_rules(runner, rt)
                rows.append({"env": env, "runtime": rt, "cgroup_dir": "real cgroupfs", "file_fs": "cgroup",
                             "openat2": o2s, **_run(runner, rt, rules)})
                name = new_id("k3snb-fake-")
                try:
                    sh = runner.run_python(_shadow_dir, name, controller, FAKER_FILES, timeout=60)
                    fs = sh["fs"].split(" ")[0]
                    res = _run(runner, rt, rules, cgroups_path=f"/{name}")
                finally:
                    runner.run_python(_unshadow_dir, f"{ROOT}/{controller}/{name}", timeout=60)
                    from ._inside import cgroup_remove

                    with contextlib.suppress(Exception):
                        runner.run_python(cgroup_remove, f"/{name}", timeout=60)
                rows.append({"env": env, "runtime": rt, "cgroup_dir": f"{controller} on tmpfs (faker files)",
                             "file_fs": fs, "openat2": o2s, **res})
    return {"runs": rows, "dirs": dirs}


def fake_tree(envs: Sequence[str], source: str = "tmpfs", runtimes: Sequence[str] = ("runc", "crun"),
              controllers: Sequence[str] = ("cpu", "cpuacct", "memory")) -> dict[str, list[dict[str, Any]]]:
    """Exps 10 (``source="workdir"``: the runner's workdir, 9p in gVisor) and 11 (``source="tmpfs"``: a
    fresh tmpfs): the static fake tree bind-mounted over /sys/fs/cgroup/{cpu,cpuacct,memory} after
    unmounting the real hierarchies, as the research did. Returns ``{"mounts": [...], "runs": [...]}``:
    per controller what ``stat -f`` and a read of its key file show, and per runtime whether busybox
    still runs directly (baseline first, with the real hierarchies)."""
    from ..runners import resolve
    from .run import auto_rules, ensure_cgroups

    mounts, runs = [], []
    ctl = list(controllers)
    for env in envs:
        with resolve(env) as runner, ensure_cgroups(runner, "v1"):
            rules = {rt: auto_rules(runner, rt) for rt in runtimes}
            for rt in runtimes:
                runs.append({"env": env, "runtime": rt, "tree": "real cgroupfs", **_run(runner, rt, rules[rt])})
            name = new_id("k3snb-fake-")
            src = str(runner.workdir / name) if source == "workdir" else f"/run/{name}"
            try:
                if source != "workdir":
                    runner.run(["sh", "-c", f"mkdir -p {src} && mount -t tmpfs -o size=50m tmpfs {src}"], check=True)
                b = runner.run_python(_bind_fake_tree, src, ctl, timeout=60)
                try:
                    for r in runner.run_python(_read_tree, ctl, timeout=60):
                        mounts.append({"env": env, "source": source, "source_fs": b["source_fs"].split(" ")[0],
                                       "bind_mounted": r["controller"] not in b["errors"],
                                       "real_umounted": ",".join(b["umounted"]), **r,
                                       "error": sanitize(b["errors"].get(r["controller"], ""), {src: "<src>"})})
                    for rt in runtimes:
                        runs.append({"env": env, "runtime": rt, "tree": f"fake on {source}",
                                     **_run(runner, rt, rules[rt])})
                finally:
                    runner.run_python(_unbind, b["binds"], timeout=60)
            finally:
                runner.run(["sh", "-c", f"umount {src} 2>/dev/null; rm -rf {src}"])
    return {"mounts": mounts, "runs": runs}


# -- notebook 07: a FUSE cgroup faker ---------------------------------------------------------------
FUSE_SOURCE = "fuse_cgroupfs.c"
_OPCODE = re.compile(r"^unique: (\d+), opcode: (\w+)", re.M)
_ERROR = re.compile(r"^\s*unique: (\d+), error: -?\d+ \(([^)]*)\)", re.M)


def build_fuse_faker(dest: str | os.PathLike) -> str:
    """Compile the kit's libfuse 2 cgroup-shaped filesystem (k3snb/data/demos/fuse_cgroupfs.c) into ``dest``
    (a folder the runner sees). MissingDependency when gcc or libfuse's headers (libfuse-dev) are absent."""
    import shutil
    import subprocess
    from importlib import resources

    from ..errors import MissingDependency

    if not shutil.which("gcc") or not shutil.which("pkg-config"):
        raise MissingDependency("gcc and pkg-config are needed to build the FUSE faker",
                                hint="apt-get install gcc pkg-config libfuse-dev")
    flags = subprocess.run(["pkg-config", "fuse", "--cflags", "--libs"], capture_output=True, text=True)
    if flags.returncode:
        raise MissingDependency("libfuse 2 development files not found (pkg-config fuse)",
                                hint="apt-get install libfuse-dev")
    src = resources.files("k3snb").joinpath(f"data/demos/{FUSE_SOURCE}").read_text()
    out = os.path.join(os.fspath(dest), "fuse_cgroupfs")
    c = os.path.join(os.fspath(dest), FUSE_SOURCE)
    with open(c, "w") as f:
        f.write(src)
    subprocess.run(["gcc", "-Wall", "-O2", c, "-o", out, *flags.stdout.split()], check=True, capture_output=True)
    return out


def _errname(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


def fuse_probe_inside(binary: str, mnt: str, access: bool = False, wait: float = 10.0) -> dict[str, Any]:
    """Inside the runner: start the FUSE faker with ``-d`` on ``mnt`` (``access``: it also answers
    FUSE_ACCESS), then ls, cat, stat -f and statfs it; which requests reached the server and what it
    replied come from libfuse's debug log."""
    import subprocess
    import time

    os.makedirs(mnt, exist_ok=True)
    log = mnt + ".log"
    with open("/proc/filesystems") as f:
        res: dict[str, Any] = {"dev_fuse": os.path.exists("/dev/fuse"), "fuse_in_filesystems": "fuse" in f.read()}
    with open(log, "w") as lf:
        env = {**os.environ, **({"K3SNB_FUSE_ACCESS": "1"} if access else {})}
        p = subprocess.Popen([binary, "-d", mnt], stdout=lf, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not is_mountpoint(mnt) and p.poll() is None:
            time.sleep(0.1)
        res["mounted"] = is_mountpoint(mnt)
        if res["mounted"]:
            try:
                res["ls"] = "ok: " + " ".join(sorted(os.listdir(mnt)))
            except OSError as e:
                res["ls"] = _errname(e)
            try:
                with open(os.path.join(mnt, "cpu", "cpu.shares")) as f:
                    res["cat_cpu_shares"] = "ok: " + f.read().strip()
            except OSError as e:
                res["cat_cpu_shares"] = _errname(e)
            st = subprocess.run(["stat", "-f", "-c", "%T %t", mnt], capture_output=True, text=True)
            res["stat_f"] = st.stdout.strip() or st.stderr.strip()
            t = statfs_type(mnt)
            res["statfs_magic"] = "error" if t is None else f"{t:#x}"
            res["statfs_name"] = FS_MAGIC.get(t or -1, "unknown")
            ls = subprocess.run(["ls", mnt], capture_output=True, text=True)
            res["ls_stderr"] = ls.stderr.strip().replace(mnt, "<mnt>")
    finally:
        with contextlib.suppress(OSError):
            umount(mnt)
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        with open(log) as f:
            text = f.read()
        with contextlib.suppress(OSError):
            os.unlink(log)
        with contextlib.suppress(OSError):
            os.rmdir(mnt)
    ops = dict(_OPCODE.findall(text))
    res["requests"] = ",".join(sorted(set(ops.values())))  # sorted: libfuse's threads answer in any order
    res["error_replies"] = ", ".join(sorted({f"{ops.get(u, '?')}: {msg}" for u, msg in _ERROR.findall(text)}))
    res["server_exit"] = p.returncode
    if not res["mounted"]:
        res["server_log"] = sanitize(text.strip().splitlines()[-1] if text.strip() else "", {mnt: "<mnt>"})
    return res


def fuse_faker(envs: Sequence[str]) -> list[dict[str, Any]]:
    """Exp 07: the kit's libfuse 2 cgroup-shaped filesystem mounted in each environment (host as context),
    once with the research's operations (no FUSE_ACCESS handler) and once also answering FUSE_ACCESS:
    does it mount, do ``ls`` and ``cat`` work, what do ``stat -f`` and statfs(2) report, which requests
    reached the server and which it answered with an error."""
    from ..runners import resolve

    rows = []
    for env in envs:
        with resolve(env) as runner:
            binary = build_fuse_faker(runner.workdir)
            for access in (False, True):
                r = runner.run_python(fuse_probe_inside, binary, f"/tmp/{new_id('k3snb-fuse-')}", access,
                                      timeout=120)
                rows.append({"env": env, "server": "+ access handler" if access else "research's ops", **r})
    return rows


# -- notebook 17: the syscalls behind runc's decision -----------------------------------------------
_FSTATFS = re.compile(r"fstatfs\(\d+<([^>]*)>, \{f_type=(\w+)")
_OPENAT2_ROOT = re.compile(r'openat2\(-1, "/sys/fs/cgroup", .*\) = (-1 (\w+)|\d+)')


def _set_cgroups_path_file(config: str, path: str) -> None:
    import json

    with open(config) as f:
        cfg = json.load(f)
    cfg["linux"]["cgroupsPath"] = path
    with open(config, "w") as f:
        json.dump(cfg, f)


def runc_cgroup_syscalls(envs: Sequence[str], controller: str = "memory") -> list[dict[str, Any]]:
    """Exp 17 / S21 at the syscall level: ``strace -f -y -e openat2,fstatfs`` over ``runc run`` of a busybox
    bundle whose ``controller`` cgroup dir holds the faker's files on a tmpfs, per environment. A row says
    whether runc's openat2 on /sys/fs/cgroup worked, whether it opened the fake cgroup.procs through
    openat2, which f_type its fstatfs of that file saw (none when it did not check), and how runc ended."""
    import shutil

    from ..errors import MissingDependency
    from ..runners import resolve
    from . import write_bundle
    from ._inside import cgroup_remove
    from .containerd import runtime_binary
    from .run import ensure_cgroups

    if not shutil.which("strace"):
        raise MissingDependency("strace is needed to show runc's syscalls", hint="apt-get install strace")
    runc = runtime_binary("runc")
    rows = []
    for env in envs:
        with resolve(env) as runner, ensure_cgroups(runner, "v1"):
            name = new_id("k3snb-fake-")
            b = write_bundle(runner.workdir / f"{name}-bundle", ["echo", "hello"])
            _set_cgroups_path_file(str(b / "config.json"), f"/{name}")
            out = runner.workdir / f"{name}.strace"
            state = f"/run/{name}-state"
            try:
                runner.run_python(_shadow_dir, name, controller, FAKER_FILES, timeout=60)
                res = runner.run(["strace", "-f", "-qq", "-y", "-e", "trace=openat2,fstatfs", "-o", str(out),
                                  runc, "--root", state, "run", "--bundle", str(b), name], timeout=120)
                text = out.read_text() if out.exists() else ""
            finally:
                runner.run([runc, "--root", state, "delete", "--force", name], timeout=30)
                runner.run_python(_unshadow_dir, f"{ROOT}/{controller}/{name}", timeout=60)
                with contextlib.suppress(Exception):
                    runner.run_python(cgroup_remove, f"/{name}", timeout=60)
                runner.run(["rm", "-rf", state, str(b), str(out)], timeout=30)
            procs = f"/{controller}/{name}/cgroup.procs"
            root = _OPENAT2_ROOT.search(text)
            seen = [t for p, t in _FSTATFS.findall(text) if p.endswith(procs)]
            err = next((ln for ln in reversed(res.stderr.splitlines()) if "runc run failed" in ln), "")
            rows.append({"env": env, "openat2_cgroupfs": "no strace line" if root is None else
                         (root.group(2) or "ok"),
                         "fake_procs_opened_by": "openat2" if re.search(rf'openat2\([^)]*"{re.escape(procs.lstrip("/"))}"',
                                                                        text) else "open (fallback)",
                         "fstatfs_of_fake_procs": ",".join(dict.fromkeys(seen)) or "none",
                         "runc": "ran" if res.ok else sanitize(err.split("msg=", 1)[-1].strip('"')).replace(
                             "<id>", "<cgroup>") or f"exit {res.returncode}"})
    return rows
