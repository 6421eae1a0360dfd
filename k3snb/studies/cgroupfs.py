"""Notebooks 17, 10, 11 (and 07's FUSE rows): can cgroup files be faked, and what do runc / crun make of it?

Evidence is the rows of :mod:`k3snb.runtime.cgroupfs_probes`, recorded by the notebook under the key each
function names. A verdict on gVisor rests on gVisor rows, per build; the host is context, except for S21,
which is about runc's own code path (openat2 vs its fstatfs fallback) and so is judged wherever runc ran.
Builds whose baseline did not run (runc cannot start a container there at all) are named in the reason as
not testable and do not decide the status; builds that disagree make the verdict inconclusive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..experiments._record import Verdict
from ._core import judged

Rows = Sequence[Mapping[str, Any]]
NOT_CGROUP = "not a cgroup file"


def _by_env(rows: Rows, gvisor_only: bool = True) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if not gvisor_only or str(r["env"]).startswith("gvisor"):
            out.setdefault(str(r["env"]), []).append(r)
    return out


def _pick(rows: Sequence[Mapping[str, Any]], **kw: Any) -> Mapping[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in kw.items())), None)


def _fail(r: Mapping[str, Any]) -> str:
    return f"{r['failed_stage']} failed ({r.get('signature') or 'no signature'}): {str(r.get('error') or '')[:120]}"


def _combine(claim: str, per: dict[str, tuple[str, str]], evidence: Mapping[str, Any], scope: str) -> Verdict:
    """Builds that could test decide (agreeing → that status, else inconclusive); untestable ones are named."""
    reason = "; ".join(f"{env}: {why}" for env, (_, why) in sorted(per.items()))
    decided = {s for s, _ in per.values() if s != "not-testable"}
    if not decided:
        return judged(claim, "not-testable", {}, reason or "no gVisor rows", environments=sorted(per))
    envs = sorted(e for e, (s, _) in per.items() if s != "not-testable")  # the builds that decide
    if len(decided) > 1:
        return judged(claim, "inconclusive", evidence, f"{scope} — the builds disagree — {reason}", envs)
    return judged(claim, decided.pop(), evidence, f"{scope} — {reason}", envs)


# -- notebook 17: the inotify faker, runc's fstatfs check, gVisor's cgroupfs --------------------------
def faker_beats_runc(rows: Rows, versions: Mapping[str, str], key: str = "fake_file_runs") -> Verdict:
    """Exp 17 ("cgroup files cannot be faked in userspace": with the faker's files in place in time, runc
    rejects them — ``not a cgroup file``), per gVisor build, from ``runc run`` with the container's memory
    cgroup dir shadowed by a tmpfs holding the faker's 21 files.

    reproduced: runc fails with ``not a cgroup file``; refuted: runc runs with the fake files (the fake was
    accepted); inconclusive: it fails otherwise; not-testable: runc does not run even on real cgroupfs
    there. crun's result on the same fake is stated in the reason (the research used runc)."""
    per: dict[str, tuple[str, str]] = {}
    for env, rs in _by_env(rows).items():
        base, fake = _pick(rs, runtime="runc", cgroup_dir="real cgroupfs"), None
        fake = next((r for r in rs if r["runtime"] == "runc" and r["cgroup_dir"] != "real cgroupfs"), None)
        crun = next((r for r in rs if r["runtime"] == "crun" and r["cgroup_dir"] != "real cgroupfs"), None)
        if base is None or fake is None:
            continue
        also = ""
        if crun is not None:
            also = "; crun " + ("runs with the same fake files" if crun["ran"] else "fails too: " + _fail(crun))
        if not base["ran"]:
            per[env] = ("not-testable", "runc does not run even on real cgroupfs: " + _fail(base))
        elif fake["ran"]:
            per[env] = ("refuted", f"runc ran with the faker's files on {fake['file_fs']} (openat2 "
                                   f"{fake['openat2']})" + also)
        elif NOT_CGROUP in str(fake["error"]):
            per[env] = ("reproduced", f"runc rejects the faker's {fake['file_fs']} file: {fake['error'][-90:]}" + also)
        else:
            per[env] = ("inconclusive", "runc fails otherwise with the fake: " + _fail(fake) + also)
    if not per:
        return judged("Exp 17", "not-testable", {}, "no runc run with a faked cgroup dir in a gVisor sandbox")
    return _combine("Exp 17", per, {key: list(rows)}, f"{versions.get('runc', 'runc')}, a busybox container")


def runc_fstatfs_check(rows: Rows, versions: Mapping[str, str], syscalls: Rows = (), key: str = "fake_file_runs",
                       syscalls_key: str = "runc_syscalls") -> Verdict:
    """S21 (runc rejects a control file that is not on cgroupfs — ``…/cgroup.procs: not a cgroup file`` —
    through its fstatfs magic check, which runc applies only when openat2 is unavailable), from runc on a
    tmpfs cgroup.procs in every environment where runc runs on real cgroupfs (host included: the claim is
    about runc's code path, and the host is where openat2 exists).

    reproduced: every such environment behaves as predicted (openat2 missing → rejected with ``not a cgroup
    file``; openat2 present → accepted) and at least one lacks openat2; refuted: a prediction fails (the
    tmpfs file accepted without openat2, or rejected as not-cgroup with it) — or the traced syscalls
    (``syscalls``: :func:`k3snb.runtime.cgroupfs_probes.runc_cgroup_syscalls` rows) contradict the mechanism
    (a rejection without an fstatfs that saw a non-cgroup f_type, or an acceptance after one);
    inconclusive: rejected with another error; not-testable: no environment without openat2 where runc runs."""
    tested: list[str] = []
    wrong: list[str] = []
    other: list[str] = []
    untested: list[str] = []
    fallback = 0
    envs: list[str] = []  # where runc ran on real cgroupfs and met the fake file: what S21 speaks for
    for env, rs in sorted(_by_env(rows, gvisor_only=False).items()):
        base = _pick(rs, runtime="runc", cgroup_dir="real cgroupfs")
        fake = next((r for r in rs if r["runtime"] == "runc" and r["cgroup_dir"] != "real cgroupfs"), None)
        if base is None or fake is None:
            continue
        if not base["ran"]:
            untested.append(f"{env}: runc does not run on real cgroupfs ({base.get('signature')})")
            continue
        envs.append(env)
        o2 = fake["openat2"] == "yes"
        rejected = (not fake["ran"]) and NOT_CGROUP in str(fake["error"])
        what = f"{env} (openat2 {fake['openat2']}): {fake['file_fs']} cgroup.procs " + (
            "accepted" if fake["ran"] else ("rejected as not a cgroup file" if rejected else
                                            "rejected: " + str(fake["error"])[-80:]))
        fallback += not o2
        if not fake["ran"] and not rejected:
            other.append(what)
        elif o2 == fake["ran"]:
            tested.append(what)
        else:
            wrong.append(what)
    ev: dict[str, Any] = {key: list(rows)}
    traced = []
    for t in syscalls:
        seen = str(t["fstatfs_of_fake_procs"])
        checked = seen not in ("none", "") and "CGROUP" not in seen
        if t["runc"] == "ran":
            (wrong if checked else traced).append(
                f"{t['env']}: openat2 {t['openat2_cgroupfs']}, cgroup.procs opened by {t['fake_procs_opened_by']}, "
                f"fstatfs of it: {seen}, runc ran")
        elif NOT_CGROUP in str(t["runc"]):
            (traced if checked else wrong).append(
                f"{t['env']}: openat2 {t['openat2_cgroupfs']}, opened by {t['fake_procs_opened_by']}, "
                f"fstatfs saw {seen}, then 'not a cgroup file'")
    if syscalls:
        ev[syscalls_key] = list(syscalls)
    ver = versions.get("runc", "runc")
    tail = ("; not testable: " + "; ".join(untested)) if untested else ""
    tail += ("; strace: " + "; ".join(traced)) if traced else ""
    if wrong:
        return judged("S21", "refuted", ev, f"{ver}: not as predicted — " + "; ".join(wrong + tested) + tail, envs)
    if other:
        return judged("S21", "inconclusive", ev, f"{ver}: " + "; ".join(other + tested) + tail, envs)
    if not fallback:
        return judged("S21", "not-testable", {}, f"{ver}: no environment without openat2 where runc runs — "
                      + ("; ".join(tested) or "no runs") + tail, envs or None)
    return judged("S21", "reproduced", ev, f"{ver}: the magic check applies exactly where openat2 is missing — "
                  + "; ".join(tested) + tail, envs)


def cgroupfs_refuses_files(dirs: Rows, key: str = "cgroup_dirs") -> Verdict:
    """S22 (on gVisor's cgroupfs, creating a regular file in a cgroup directory fails with ``Operation not
    permitted``), per build, over every v1 hierarchy the kit mounted. reproduced: every hierarchy refuses
    with EPERM; refuted: some hierarchy accepts the file; inconclusive: refused with another errno."""
    per: dict[str, tuple[str, str]] = {}
    for env, rs in _by_env(dirs).items():
        made = [r for r in rs if r["mkdir"] == "ok"]
        if not made:
            per[env] = ("not-testable", "no cgroup directory could be made")
            continue
        ok = [r["hierarchy"] for r in made if r["create_file"] == "ok"]
        errs = sorted({str(r["create_file"]) for r in made} - {"ok"})
        names = ", ".join(r["hierarchy"] for r in made)
        if ok:
            per[env] = ("refuted", f"a new file is created in {', '.join(ok)}")
        elif errs == ["EPERM"]:
            per[env] = ("reproduced", f"EPERM in every hierarchy ({names})")
        else:
            per[env] = ("inconclusive", f"refused with {', '.join(errs)} ({names})")
    if not per:
        return judged("S22", "not-testable", {}, "no cgroup directory probe in a gVisor sandbox")
    return _combine("S22", per, {key: list(dirs)}, "cgroup v1 mounted by the kit")


def empty_cgroup_dirs(dirs: Rows, key: str = "cgroup_dirs") -> Verdict:
    """Exp 17's manual check ("gVisor doesn't auto-create cgroup files": ``mkdir`` under a hierarchy gives an
    empty directory), per build. reproduced: every new directory is empty; refuted: every one holds
    ``cgroup.procs`` (the sentry populates it); inconclusive: mixed."""
    per: dict[str, tuple[str, str]] = {}
    for env, rs in _by_env(dirs).items():
        made = [r for r in rs if r["mkdir"] == "ok"]
        if not made:
            per[env] = ("not-testable", "no cgroup directory could be made")
            continue
        full = [f"{r['hierarchy']} {r['files']}" for r in made if r["has_cgroup_procs"]]
        empty = [r["hierarchy"] for r in made if not r["files"]]
        if len(full) == len(made):
            per[env] = ("refuted", "a new cgroup dir holds cgroup.procs and its control files (files per "
                                   "hierarchy: " + ", ".join(full) + ")")
        elif len(empty) == len(made):
            per[env] = ("reproduced", "every new cgroup dir is empty (" + ", ".join(empty) + ")")
        else:
            per[env] = ("inconclusive", f"populated: {', '.join(full) or '-'}; empty: {', '.join(empty) or '-'}")
    if not per:
        return judged("Exp 17: empty cgroup dirs", "not-testable", {}, "no cgroup directory probe in gVisor")
    return _combine("Exp 17: empty cgroup dirs", per, {key: list(dirs)}, "mkdir under the kit's v1 hierarchies")


# -- notebooks 10 and 11: a static fake tree bind-mounted over /sys/fs/cgroup --------------------------
SOURCES = {"Exp 10": "workdir", "Exp 11": "tmpfs"}
TMPFS_MAGIC = "0x1021994"


def fake_tree_mounts(claim: str, mounts: Rows, key: str = "fake_tree") -> Verdict:
    """Exp 10 (the fake tree's files on the runner's workdir — 9p in gVisor — bind-mounted over
    /sys/fs/cgroup/{cpu,cpuacct,memory} read back: ``cat cpu.shares`` → 1024) or Exp 11 (the same from a fresh
    tmpfs, and ``stat -f`` says tmpfs, magic 0x1021994), per gVisor build.

    reproduced: every controller bind-mounted and its key file reads the fake value (Exp 11: and statfs
    reports tmpfs 0x1021994); refuted: a bind mount or read failed, or statfs reports another type."""
    source = SOURCES[claim]
    per: dict[str, tuple[str, str]] = {}
    for env, rs in _by_env([m for m in mounts if m["source"] == source]).items():
        bad = [f"{r['controller']}: bind mount failed ({r['error'][:60]})" for r in rs if not r["bind_mounted"]]
        cpu = _pick(rs, controller="cpu")
        if cpu is not None and cpu["bind_mounted"] and cpu["value"] != "1024":
            bad.append(f"cpu.shares reads {cpu['value']!r}")
        fs = sorted({str(r["fs"]) for r in rs if r["bind_mounted"]})
        if claim == "Exp 11" and any(TMPFS_MAGIC not in f or not f.startswith("tmpfs") for f in fs):
            bad.append(f"stat -f reports {', '.join(fs)}")
        got = ", ".join(f"{r['controller']} ({r['file']} = {r['value']})" for r in rs if r["bind_mounted"])
        if bad:
            per[env] = ("refuted", "; ".join(bad) + (f"; mounted: {got}" if got else ""))
        else:
            per[env] = ("reproduced", f"bind-mounted from {rs[0]['source_fs']} and read back: {got}; "
                                      f"stat -f: {', '.join(fs)}")
    if not per:
        return judged(claim, "not-testable", {}, f"no fake tree on {source} in a gVisor sandbox")
    gone = next((str(m["real_umounted"]) for m in mounts if m["source"] == source and m.get("real_umounted")), "")
    return _combine(claim, per, {key: list(mounts)},
                    f"the real {gone or 'hierarchies'} unmounted first, as the research did")


def fake_tree_vs_runc(runs: Rows, versions: Mapping[str, str], key: str = "fake_tree_runs") -> Verdict:
    """§7.5 ("fake trees bind-mounted over /sys/fs/cgroup confuse runc: not cgroupfs, so ``not a cgroup
    file``"), per gVisor build, from ``runc run`` with the real hierarchies and then with the fake tree.

    reproduced: runc fails with ``not a cgroup file`` on the fake tree; refuted: runc runs (it no longer
    finds those hierarchies in mountinfo and leaves them alone); inconclusive: it fails otherwise;
    not-testable: runc does not run with the real hierarchies there. crun is stated in the reason."""
    per: dict[str, tuple[str, str]] = {}
    for env, rs in _by_env(runs).items():
        base = _pick(rs, runtime="runc", tree="real cgroupfs")
        fake = next((r for r in rs if r["runtime"] == "runc" and r["tree"] != "real cgroupfs"), None)
        crun = next((r for r in rs if r["runtime"] == "crun" and r["tree"] != "real cgroupfs"), None)
        if base is None or fake is None:
            continue
        also = "" if crun is None else "; crun " + ("runs too" if crun["ran"] else "fails: " + _fail(crun))
        if not base["ran"]:
            per[env] = ("not-testable", "runc does not run even with the real hierarchies: " + _fail(base))
        elif fake["ran"]:
            per[env] = ("refuted", f"runc runs with the {fake['tree']} in place" + also)
        elif NOT_CGROUP in str(fake["error"]):
            per[env] = ("reproduced", f"runc rejects the {fake['tree']}: not a cgroup file" + also)
        else:
            per[env] = ("inconclusive", "runc fails otherwise: " + _fail(fake) + also)
    if not per:
        return judged("§7.5 fake tree vs runc", "not-testable", {}, "no runc run with a fake tree in gVisor")
    return _combine("§7.5 fake tree vs runc", per, {key: list(runs)},
                    f"{versions.get('runc', 'runc')}, a busybox container run directly")


# -- notebook 07: a FUSE cgroup faker ---------------------------------------------------------------
ENOSYS = "ENOSYS"
CGROUP_MAGIC = "0x27e0eb"


def fuse_faker_enosys(rows: Rows, key: str = "fuse") -> Verdict:
    """Exp 07 (a libfuse cgroup faker mounts in gVisor — INIT succeeds — but ``ls``/``cat`` on it fail with
    ``Function not implemented``), per gVisor build, from the faker with the research's operations.
    reproduced: mounted, and listing the root and reading ``cpu/cpu.shares`` both fail with ENOSYS; refuted:
    the mount fails, or both work; inconclusive: other errors."""
    per: dict[str, tuple[str, str]] = {}
    for env, rs in _by_env(rows).items():
        r = _pick(rs, server="research's ops")
        if r is None:
            continue
        if not r["mounted"]:
            per[env] = ("refuted", f"the FUSE mount itself fails ({r.get('server_log') or 'no mount'})")
        elif r["ls"] == ENOSYS and r["cat_cpu_shares"] == ENOSYS:
            per[env] = ("reproduced", f"mounted (requests {r['requests']}), then readdir and open fail with ENOSYS")
        elif str(r["ls"]).startswith("ok") and str(r["cat_cpu_shares"]).startswith("ok"):
            per[env] = ("refuted", f"mounted, listed ({r['ls'][4:]}) and read (cpu.shares = {r['cat_cpu_shares'][4:]})")
        else:
            per[env] = ("inconclusive", f"mounted; listing: {r['ls']}, reading: {r['cat_cpu_shares']}")
    if not per:
        return judged("Exp 07", "not-testable", {}, "no FUSE faker run in a gVisor sandbox")
    return _combine("Exp 07", per, {key: list(rows)}, "the kit's libfuse 2.9 faker (getattr, readdir, open, "
                    "read, statfs)")


def fuse_enosys_origin(rows: Rows, key: str = "fuse") -> Verdict:
    """Exp 07's attribution ("BLOCKED — gVisor FUSE limitations": the ENOSYS comes from gVisor's partial FUSE,
    not from the FUSE program), per gVisor build where the research's operations hit ENOSYS.

    refuted: libfuse's debug log shows the server itself replied ENOSYS to a request, and the same server
    with that request answered (an access handler) lists and reads — the error is the program's reply,
    passed to the caller by the sentry; reproduced: the server replied no ENOSYS, or the access handler does
    not help with ENOSYS still; inconclusive: the access handler fails otherwise; not-testable: no ENOSYS."""
    per: dict[str, tuple[str, str]] = {}
    for env, rs in _by_env(rows).items():
        r, fixed = _pick(rs, server="research's ops"), _pick(rs, server="+ access handler")
        if r is None:
            continue
        if not r["mounted"] or ENOSYS not in (r["ls"], r["cat_cpu_shares"]):
            per[env] = ("not-testable", "no ENOSYS here (listing: {}, reading: {})".format(
                r.get("ls", "not mounted"), r.get("cat_cpu_shares", "not mounted")))
            continue
        replied = [e for e in str(r["error_replies"]).split(", ") if "Function not implemented" in e]
        works = fixed is not None and str(fixed.get("ls")).startswith("ok") and \
            str(fixed.get("cat_cpu_shares")).startswith("ok")
        if not replied or (fixed is not None and ENOSYS in (fixed.get("ls"), fixed.get("cat_cpu_shares"))):
            per[env] = ("reproduced", "ENOSYS without the server replying it" if not replied else
                        f"still ENOSYS with an access handler (requests {fixed['requests']})")
        elif works:
            per[env] = ("refuted", f"the server replied ENOSYS itself ({', '.join(replied)}; libfuse's default for "
                                   "an operation without a handler, which Linux's FUSE takes as 'allow') and the "
                                   "sentry passed it to the caller; with an access handler ls and cat work")
        else:
            per[env] = ("inconclusive", f"the server replied {', '.join(replied)}; with an access handler: listing "
                                        f"{fixed.get('ls') if fixed else '-'}, reading "
                                        f"{fixed.get('cat_cpu_shares') if fixed else '-'}")
    if not per:
        return judged("Exp 07: ENOSYS source", "not-testable", {}, "no FUSE faker run in a gVisor sandbox")
    return _combine("Exp 07: ENOSYS source", per, {key: list(rows)}, "libfuse 2.9 debug log (-d) of the faker")


def fuse_statfs_magic(rows: Rows, key: str = "fuse") -> Verdict:
    """C14 (Exp 07's README: the FUSE cgroupfs reports CGROUP_SUPER_MAGIC 0x27e0eb; the code fills a struct
    statvfs, which has no f_type), from statfs(2) and ``stat -f`` of every mounted faker, host included (the
    magic is set by the kernel or the sentry, not by the program). reproduced: every mount reports
    0x27e0eb; refuted: none does; inconclusive: mixed; not-testable: nothing mounted."""
    seen = {(str(r["env"]), str(r["statfs_magic"]), str(r.get("stat_f"))) for r in rows if r.get("mounted")}
    if not seen:
        return judged("C14", "not-testable", {}, "the FUSE faker did not mount anywhere")
    cg = [s for s in seen if s[1] == CGROUP_MAGIC]
    what = "; ".join(f"{env}: statfs f_type {m}, stat -f '{sf}'" for env, m, sf in sorted(seen))
    status = "reproduced" if len(cg) == len(seen) else "refuted" if not cg else "inconclusive"
    return judged("C14", status, {key: list(rows)}, "the kit's libfuse 2.9 faker (statfs fills struct statvfs) — "
                  + what, environments=sorted({env for env, _, _ in seen}))
