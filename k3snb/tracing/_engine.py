"""The tracer: one ``waitpid(-1, __WALL)`` loop over the whole traced tree, per-tid state.

Runs in its own process (``python -m k3snb.tracing``), never inside a notebook kernel: a
``waitpid(-1)`` there would reap the kernel's other children, and ptrace binds tracees to the
thread that attached them. Design rules from ptrace-feasibility.md §7:

* attach with ``PTRACE_SEIZE`` (job control keeps working: group-stops get ``PTRACE_LISTEN``);
* options TRACESYSGOOD|FORK|VFORK|CLONE|EXEC|SECCOMP|EXITKILL — the tree dies with the tracer;
* seccomp ``RET_TRACE`` so only needed syscalls stop; the stop order (Linux >= 4.8: seccomp stop
  then exit stop; gVisor 2022: seccomp, *enter*, exit) is probed at start-up, not assumed;
* rewritten strings go below the red zone, 16-byte aligned; the argument register is restored at
  the exit stop (a syscall restarted after a signal re-reads it);
* memory is read with ``pread(/proc/tid/mem)`` and written with ``pwrite`` where the kernel allows
  it, else ``PTRACE_POKEDATA`` (gVisor refuses O_RDWR on /proc/pid/mem).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from . import _decode as D
from . import _ptrace as P
from . import _seccomp as S
from ._rules import Rule

ARG_REGS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
RED_ZONE_GAP = 256  # bytes kept free below rsp: the 128-byte ABI red zone plus margin
GROUP_STOP_SIGS = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
GRACE = 5.0  # seconds a signalled tree gets to exit before SIGKILL
EXPECT_NONE, EXPECT_ENTER, EXPECT_EXIT = 0, 1, 2
NEG_ENOSYS = P.to_unsigned(-P.ENOSYS)
_RT_SIGRETURN = D.SYSCALL_NUMBERS["rt_sigreturn"]
PATH_ARGS = D.PATH_ARGS
EXIT_NRS = {D.SYSCALL_NUMBERS["exit"], D.SYSCALL_NUMBERS["exit_group"]}
FORCE_NR = D.SYSCALL_NUMBERS["getpid"]
SYSCALL_NAMES = D.SYSCALL_NAMES
ERRNO_NAMES = D.ERRNO_NAMES
OPEN_FLAG_ARG = D._FLAG_ARG
FD_NRS = D.FD_FIRST_NRS | {n for n, spec in D.PATH_ARGS.items() if spec[0][1] is not None}  # "returns" the interrupted call's rax, not an error
BASE_OPTS = (P.O_TRACESYSGOOD | P.O_TRACEFORK | P.O_TRACEVFORK | P.O_TRACECLONE | P.O_TRACEEXEC)


@dataclass
class Features:
    """What this kernel (or gVisor Sentry) offers the tracer; probed, never assumed."""

    seccomp: bool = False
    seccomp_error: str | None = None
    seccomp_before_entry: bool = False
    mem_write: bool = False
    syscall_info: bool = False
    kernel: str = field(default_factory=lambda: os.uname().release)

    def to_dict(self) -> dict:
        return asdict(self)


class _StopAttach(Exception):
    pass


class Task:
    __slots__ = ("tid", "started", "expect", "in_sys", "nr", "args", "t0", "restore", "post_statfs",
                 "force_errno", "paths", "note", "memfd", "wmemfd", "ppid", "tgid")

    def __init__(self, tid: int, ppid: int = 0) -> None:
        self.tid = tid
        self.started = False
        self.expect = EXPECT_NONE
        self.in_sys = False
        self.nr = -1
        self.args = None
        self.t0 = 0.0
        self.restore = None
        self.post_statfs = None
        self.force_errno = 0
        self.paths = None
        self.note = None
        self.memfd = -1
        self.wmemfd = -1
        self.ppid = ppid
        self.tgid = 0


def _child_prologue() -> None:
    # exec keeps ignored signals ignored: undo Python's SIGPIPE/SIGXFSZ=SIG_IGN like subprocess does
    for s in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _no_ptrace(e: Exception):
    from ..errors import TraceError

    return TraceError(
        f"ptrace is not permitted here ({e})",
        hint="is this process already traced (strace/gdb/another k3snb tracer: ptrace does not nest)? "
             "otherwise check CAP_SYS_PTRACE, kernel.yama.ptrace_scope and the seccomp profile",
    )


def _mem_write_works(pid: int) -> bool:
    # gVisor 2022 lets O_RDWR open succeed (with caps) but pwrite fails with EINVAL: test a write
    try:
        regs = P.getregs(pid)
        addr = (regs.rsp - RED_ZONE_GAP) & ~7
        fd = os.open(f"/proc/{pid}/mem", os.O_RDWR)
        try:
            data = os.pread(fd, 8, addr)
            return os.pwrite(fd, data, addr) == 8
        finally:
            os.close(fd)
    except (OSError, P.PtraceError):
        return False


def probe_features(try_seccomp: bool = True) -> Features:
    """Fork a child that stops on a seccomp-traced ``getppid``; learn the stop order and what works."""
    feats = Features()
    inst = S.Installer(S.build({D.SYSCALL_NUMBERS["getppid"]}, skip_empty_path=False)) if try_seccomp else None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            _child_prologue()
            os.kill(os.getpid(), signal.SIGSTOP)
            err = inst.install() if inst else _errno.ENOSYS
            os.write(w, str(err).encode())
            os.close(w)
            os.getppid()
        finally:
            os._exit(0)
    os.close(w)
    try:
        _, st = os.waitpid(pid, os.WUNTRACED)
        try:
            P.seize(pid, P.O_TRACESYSGOOD | P.O_TRACESECCOMP | P.O_EXITKILL)
        except P.PtraceError as e:
            raise _no_ptrace(e) from None
        os.kill(pid, signal.SIGCONT)
        stage = 0  # 1 after the seccomp stop (PTRACE_SYSCALL issued)
        while True:
            _, st = os.waitpid(pid, P.WALL)
            if os.WIFEXITED(st) or os.WIFSIGNALED(st):
                break
            sig = os.WSTOPSIG(st)
            ev = st >> 16
            if ev == P.EVENT_SECCOMP:
                feats.seccomp = True
                feats.syscall_info = P.get_syscall_info_works(pid)
                feats.mem_write = _mem_write_works(pid)
                stage = 1
                P.syscall(pid)
            elif sig == P.SYSCALL_TRAP and stage == 1:
                regs = P.getregs(pid)
                # an enter stop still has rax = -ENOSYS; an exit stop has getppid's result
                feats.seccomp_before_entry = regs.rax == NEG_ENOSYS
                stage = 2
                P.cont(pid)
            elif ev == P.EVENT_STOP or sig == signal.SIGCONT or sig == P.SYSCALL_TRAP:
                P.cont(pid)
            else:
                P.cont(pid, sig)
        err = os.read(r, 16).decode() or "?"
        if not feats.seccomp:
            feats.seccomp_error = "no seccomp stop" if err == "0" else _errno.errorcode.get(int(err), err) \
                if err.lstrip("-").isdigit() else err
    finally:
        os.close(r)
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, P.WALL)
        except (ProcessLookupError, ChildProcessError):
            pass
    return feats


class Engine:
    """Run (or attach to) a process tree under ptrace, applying ``rules`` and recording rows.

    Args:
        rules: interception rules (already materialised: ``fake`` rules turned into redirects).
        syscalls: syscall numbers to record (``None`` = all, ``set()`` = none, only rewrites/events).
        record: a callable taking one row tuple (see ``ROW_FIELDS``), or None.
        seccomp: True/False/None (auto: use it when the kernel allows and not recording everything).
        follow: follow fork/vfork/clone children.
        linger: after the root exits, SIGKILL what is left after this many seconds (None = wait).
        grace: after a forwarded SIGTERM/SIGINT/SIGHUP/SIGQUIT, SIGKILL what is left after this
            many seconds (None = wait for the tree to obey).
    """

    ROW_FIELDS = ("time", "pid", "tid", "parent", "exe", "event", "syscall", "args", "path", "path2",
                  "fd", "open_flags", "ret", "errno", "duration", "detail")

    def __init__(self, rules: Sequence[Rule] = (), *, syscalls: set[int] | frozenset[int] | None = frozenset(),
                 record: Callable[[tuple], None] | None = None, seccomp: bool | None = None,
                 follow: bool = True, linger: float | None = None, features: Features | None = None,
                 log: Callable[[str], None] | None = None, grace: float | None = GRACE) -> None:
        self.rules = list(rules)
        self.grace = grace
        self.syscalls = syscalls
        self.record = record
        self.follow = follow
        self.linger = linger
        self.log = log
        self._compile_rules()
        want_all = record is not None and syscalls is None
        self.trace_nrs = self._filter_nrs()
        if seccomp is None:
            seccomp = not want_all
        if want_all:
            seccomp = False  # every syscall stops anyway; a filter would only add a stop
        self.features = features or probe_features()
        self.use_seccomp = bool(seccomp and self.features.seccomp)
        self.tasks: dict[int, Task] = {}
        self.exe: dict[int, str] = {}
        self.root = 0
        self.root_status: int | None = None
        self.t_start = time.monotonic()
        self.stats = {"stops": 0, "syscalls": 0, "rewrites": 0, "statfs_spoofed": 0, "errno_forced": 0,
                      "tasks": 0, "execs": 0}
        self._forwarded = 0
        self._sent_sig = 0  # the last signal forwarded to the tree (sent to late children too)
        self._attached = False
        self._root_cont_seen = False

    # -- rule compilation ----------------------------------------------------------------------
    def _compile_rules(self) -> None:
        self.exact: dict[bytes, tuple[Rule, bytes]] = {}
        self.prefixes: dict[bytes, tuple[Rule, bytes]] = {}
        self.statfs_path: list[tuple[bytes, int]] = []
        self.statfs_type: dict[int, int] = {}
        self.errno_path: list[Rule] = []
        self.errno_nr: dict[int, int] = {}
        roots = set()
        for r in self.rules:
            if r.kind == "redirect":
                src = os.fsencode(r.path)
                (self.prefixes if r.subtree else self.exact)[src] = (r, os.fsencode(r.target))
                roots.add(src)
            elif r.kind == "statfs":
                if r.path:
                    self.statfs_path.append((os.fsencode(r.path), r.to_type))
                    roots.add(os.fsencode(r.path))
                else:
                    self.statfs_type[r.from_type] = r.to_type
            elif r.kind == "errno":
                code = getattr(_errno, r.errno)
                if r.path is None:
                    for n in D.resolve_syscalls(list(r.syscalls)):
                        self.errno_nr[n] = code
                else:
                    self.errno_path.append(r)
                    roots.add(os.fsencode(r.path))
        self.has_path_rules = bool(self.exact or self.prefixes or self.statfs_path or self.errno_path)
        # with exact-file rules only, a relative path can match only if its last component is a
        # rule's last component: most relative lookups (find, tar) skip the /proc readlink then
        self.only_exact = not self.prefixes and not self.statfs_path and not any(r.subtree for r in self.errno_path)
        self.leaves = {os.path.basename(p) for p in self.exact} | {
            os.path.basename(os.fsencode(r.path)) for r in self.errno_path} | {b".", b".."}
        # quick reject: a path can only match if it starts with one of these
        self.roots = tuple(sorted(roots))
        self.errno_path_nrs: dict[int, list[Rule]] = {}
        for r in self.errno_path:
            for n in D.resolve_syscalls(list(r.syscalls)) if r.syscalls else D.PATH_ARGS:
                self.errno_path_nrs.setdefault(n, []).append(r)

    def _filter_nrs(self) -> set[int]:
        nrs: set[int] = set()
        if self.exact or self.prefixes or self.errno_path:
            nrs |= set(D.PATH_ARGS)
        if self.statfs_path:
            nrs |= {D.STATFS_NR, D.FSTATFS_NR}
        if self.statfs_type:
            nrs |= {D.STATFS_NR, D.FSTATFS_NR}
        nrs |= set(self.errno_nr)
        if self.record is not None and self.syscalls:
            nrs |= self.syscalls
        return nrs

    # -- memory ----------------------------------------------------------------------------------
    def _memfd(self, t: Task) -> int:
        if t.memfd < 0:
            t.memfd = os.open(f"/proc/{t.tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        return t.memfd

    def read_str(self, t: Task, addr: int, limit: int = 4096) -> bytes | None:
        if addr == 0:
            return None
        try:
            fd = self._memfd(t)
            out = b""
            first = True
            while len(out) < limit:
                n = 4096 - (addr & 4095)  # never cross a page in one read: the next may be unmapped
                if first and n > 256:
                    n = 256
                first = False
                chunk = os.pread(fd, n, addr)
                if not chunk:
                    return out
                i = chunk.find(b"\0")
                if i >= 0:
                    return out + chunk[:i]
                out += chunk
                addr += len(chunk)
            return out
        except OSError:
            return None

    def read_mem(self, t: Task, addr: int, n: int) -> bytes:
        return os.pread(self._memfd(t), n, addr)

    def write_mem(self, t: Task, addr: int, data: bytes) -> None:
        if self.features.mem_write:
            try:
                if t.wmemfd < 0:
                    t.wmemfd = os.open(f"/proc/{t.tid}/mem", os.O_RDWR | os.O_CLOEXEC)
                if os.pwrite(t.wmemfd, data, addr) == len(data):
                    return
            except OSError:
                pass
            self.features.mem_write = False  # refused after all: use POKEDATA from now on
        # PTRACE_POKEDATA word by word; ``addr`` is 8-aligned and data padded by the caller
        for off in range(0, len(data), 8):
            P.pokedata(t.tid, addr + off, int.from_bytes(data[off:off + 8], "little"))

    def _poke_partial(self, t: Task, addr: int, data: bytes) -> None:
        # small in-place patch (statfs f_type): read-modify-write the aligned words around it
        start = addr & ~7
        end = (addr + len(data) + 7) & ~7
        buf = bytearray(self.read_mem(t, start, end - start))
        buf[addr - start: addr - start + len(data)] = data
        self.write_mem(t, start, bytes(buf))

    # -- path resolution -------------------------------------------------------------------------
    def _abspath(self, t: Task, path: bytes, dirfd: int | None) -> bytes | None:
        if path.startswith(b"/"):
            return os.path.normpath(path) if (b"/." in path or b"//" in path) else path
        if not path:
            return None
        try:
            if dirfd is None or dirfd == D.AT_FDCWD:
                base = os.readlink(f"/proc/{t.tid}/cwd".encode())
            else:
                base = os.readlink(f"/proc/{t.tid}/fd/{dirfd}".encode())
        except OSError:
            return None
        if not base.startswith(b"/"):
            return None
        return os.path.normpath(base + b"/" + path)

    def _match_redirect(self, p: bytes) -> bytes | None:
        hit = self.exact.get(p)
        if hit is not None:
            return hit[1]
        if self.prefixes:
            q = p
            while q and q != b"/":
                hit = self.prefixes.get(q)
                if hit is not None:
                    return hit[1] + p[len(q):]
                q = q.rsplit(b"/", 1)[0]
            hit = self.prefixes.get(b"/")
            if hit is not None:
                return hit[1] + p
        return None

    # -- syscall entry / exit ----------------------------------------------------------------------
    def on_entry(self, t: Task, regs) -> bool:
        """Decide at the syscall entry (or seccomp stop); True if the exit stop is needed."""
        nr = regs.orig_rax
        t.nr = nr
        t.restore = None
        t.post_statfs = None
        t.force_errno = 0
        t.paths = None
        t.note = None
        recording = self.record is not None and (self.syscalls is None or nr in self.syscalls)
        spec = D.PATH_ARGS.get(nr)
        need_exit = recording
        changed = False
        if spec is not None and (self.has_path_rules or recording):
            args = (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)
            paths = []
            new = []
            for ai, di in spec:
                raw = self.read_str(t, args[ai])
                paths.append(raw)
                if raw is None or not self.has_path_rules:
                    continue
                if raw.startswith(b"/") and b"/." not in raw and b"//" not in raw:
                    ap = raw
                else:
                    if self.only_exact and not raw.startswith(b"/") and \
                            raw.rstrip(b"/").rsplit(b"/", 1)[-1] not in self.leaves:
                        continue
                    ap = self._abspath(t, raw, D._s32(args[di]) if di is not None else None)
                if ap is None or not ap.startswith(self.roots):
                    continue
                if self.errno_path and nr in self.errno_path_nrs:
                    sp_ = os.fsdecode(ap)
                    for r in self.errno_path_nrs[nr]:
                        if r.matches(sp_):
                            t.force_errno = getattr(_errno, r.errno)
                            break
                target = self._match_redirect(ap)
                if target is not None:
                    new.append((ai, raw, target))
                if nr == D.STATFS_NR:
                    for pre, to in self.statfs_path:
                        if ap == pre or ap.startswith(pre + b"/"):
                            t.post_statfs = to
            t.paths = paths
            if new:
                sp = regs.rsp - RED_ZONE_GAP
                restore = []
                for ai, raw, target in new:
                    data = target + b"\0"
                    data += b"\0" * (-len(data) % 8)
                    sp = (sp - len(data)) & ~15
                    self.write_mem(t, sp, data)
                    reg = ARG_REGS[ai]
                    restore.append((reg, getattr(regs, reg)))
                    setattr(regs, reg, sp)
                    self.stats["rewrites"] += 1
                    if self.log:
                        self.log(f"[{t.tid}] {D.name(nr)} {os.fsdecode(raw)} -> {os.fsdecode(target)}")
                t.restore = restore
                t.note = "; ".join(f"{os.fsdecode(raw)} -> {os.fsdecode(tg)}" for _, raw, tg in new)
                if self.record is not None:  # rewrites are rare: name the thread (runc:[2:INIT] …)
                    t.note += f" [comm {self._comm(t.tid)}]"
                changed = True
                need_exit = True
        if nr == D.FSTATFS_NR and self.statfs_path:
            try:
                ap = os.readlink(f"/proc/{t.tid}/fd/{D._s32(regs.rdi)}".encode())
                for pre, to in self.statfs_path:
                    if ap == pre or ap.startswith(pre + b"/"):
                        t.post_statfs = to
            except OSError:
                pass
        if (nr == D.STATFS_NR or nr == D.FSTATFS_NR) and (t.post_statfs is not None or self.statfs_type):
            need_exit = True
        code = self.errno_nr.get(nr)
        if code:
            t.force_errno = code
        if t.force_errno:
            # run a harmless getpid instead and put the errno in at the exit stop; syscall -1
            # ("skip") is not honoured the same way in gVisor (it answers ENOSYS, with no exit stop)
            regs.orig_rax = FORCE_NR
            changed = True
            need_exit = True
            self.stats["errno_forced"] += 1
            if self.log:
                self.log(f"[{t.tid}] {D.name(nr)} -> -{_errno.errorcode[t.force_errno]}")
        if changed:
            P.setregs(t.tid, regs)
        if need_exit:
            t.args = (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9) if t.restore is None else \
                tuple(dict(t.restore).get(r, getattr(regs, r)) for r in ARG_REGS)
            t.t0 = time.monotonic()
            if nr in EXIT_NRS and not t.force_errno:  # never returns: record it now
                self._record_syscall(t, None, None)
                return False
        return need_exit

    def on_exit(self, t: Task, regs) -> None:
        changed = False
        if t.restore:
            for reg, val in t.restore:
                setattr(regs, reg, val)
            t.restore = None
            changed = True
        if t.force_errno:
            regs.rax = P.to_unsigned(-t.force_errno)
            changed = True
        nr = t.nr
        ret = P.to_signed(regs.rax)
        detail = t.note
        if (nr == D.STATFS_NR or nr == D.FSTATFS_NR) and ret == 0:
            buf = regs.rsi
            try:
                ftype = int.from_bytes(self.read_mem(t, buf, 8), "little")
                to = t.post_statfs if t.post_statfs is not None else self.statfs_type.get(ftype)
                if to is not None and to != ftype:
                    self._poke_partial(t, buf, to.to_bytes(8, "little"))
                    self.stats["statfs_spoofed"] += 1
                    detail = f"f_type {ftype:#x} -> {to:#x}"
                    if self.log:
                        self.log(f"[{t.tid}] {D.name(nr)} f_type {ftype:#x} -> {to:#x}")
            except OSError:
                pass
        if changed:
            P.setregs(t.tid, regs)
        if self.record is not None and (self.syscalls is None or nr in self.syscalls or detail):
            self._record_syscall(t, ret, detail)
        t.force_errno = 0
        t.post_statfs = None

    # -- rows ----------------------------------------------------------------------------------------
    @staticmethod
    def _comm(tid: int) -> str:
        try:
            with open(f"/proc/{tid}/comm", "rb") as f:
                return f.read().strip().decode(errors="replace")
        except OSError:
            return "?"

    def _tgid(self, t: Task) -> int:
        if not t.tgid:
            try:
                with open(f"/proc/{t.tid}/status", "rb") as f:
                    for line in f:
                        if line.startswith(b"Tgid:"):
                            t.tgid = int(line.split()[1])
                            break
            except (OSError, ValueError):
                pass
            if not t.tgid:
                t.tgid = t.tid
        return t.tgid

    def _record_syscall(self, t: Task, ret: int | None, detail: str | None) -> None:
        nr = t.nr
        a = t.args or (0, 0, 0, 0, 0, 0)
        paths = t.paths
        spec = PATH_ARGS.get(nr)
        if spec is not None and paths is None:
            paths = [self.read_str(t, a[ai]) for ai, _ in spec]
        p1 = p2 = None
        if paths:
            if paths[0] is not None:
                p1 = paths[0].decode("utf-8", "backslashreplace")
            if len(paths) > 1 and paths[1] is not None:
                p2 = paths[1].decode("utf-8", "backslashreplace")
        pid = t.tgid or self._tgid(t)
        self.stats["syscalls"] += 1
        self.record((t.t0 - self.t_start, pid, t.tid, t.ppid, self.exe.get(pid), "syscall",
                     SYSCALL_NAMES.get(nr) or D.name(nr),
                     ", ".join([str(v) if v < 4096 else hex(v) for v in a]), p1, p2,
                     D.fd_arg(nr, a) if nr in FD_NRS else None,
                     D.open_flags(a[OPEN_FLAG_ARG[nr]]) if nr in OPEN_FLAG_ARG else None,
                     ret, ERRNO_NAMES.get(-ret) if ret is not None and -4096 < ret < 0 and nr != _RT_SIGRETURN
                     else None, time.monotonic() - t.t0, detail))

    def _event(self, t: Task, kind: str, ret: int | None = None, detail: str | None = None) -> None:
        if self.record is None:
            return
        pid = self._tgid(t)
        self.record((time.monotonic() - self.t_start, pid, t.tid, t.ppid, self.exe.get(pid), kind, None,
                     None, None, None, None, None, ret, None, None, detail))

    # -- starting ------------------------------------------------------------------------------------
    def options(self) -> int:
        o = P.O_TRACESYSGOOD | P.O_TRACEEXEC
        if self.follow:
            o |= P.O_TRACEFORK | P.O_TRACEVFORK | P.O_TRACECLONE
        if self.use_seccomp:
            o |= P.O_TRACESECCOMP
        if not self._attached:
            o |= P.O_EXITKILL  # the tree must not outlive us: RET_TRACE without a tracer is ENOSYS
        return o

    def spawn(self, argv: Sequence[str], env: dict | None = None, cwd: str | None = None) -> int:
        inst = S.Installer(S.build(self.trace_nrs, foreign="deny" if self.rules else "trace")) \
            if self.use_seccomp else None
        path = argv[0]
        env = dict(os.environ if env is None else env)
        pid = os.fork()
        if pid == 0:
            try:
                _child_prologue()
                if cwd:
                    os.chdir(cwd)
                os.kill(os.getpid(), signal.SIGSTOP)  # wait until the tracer has seized us
                if inst is not None:
                    err = inst.install()
                    if err:
                        os.write(2, f"k3snb.trace: seccomp filter: {os.strerror(err)}\n".encode())
                        os._exit(126)
                os.execve(path, list(argv), env)
            except BaseException as e:  # noqa: BLE001 - report anything, then leave without cleanup
                try:
                    os.write(2, f"k3snb.trace: cannot execute {path}: {e}\n".encode())
                finally:
                    os._exit(127)
        _, st = os.waitpid(pid, os.WUNTRACED)
        if not os.WIFSTOPPED(st):
            raise OSError(f"child {pid} did not stop before exec (status {st:#x})")
        P.seize(pid, self.options())
        self.root = pid
        t = Task(pid, ppid=os.getpid())
        t.tgid = pid
        self.tasks[pid] = t
        self.exe[pid] = path
        self.stats["tasks"] += 1
        os.kill(pid, signal.SIGCONT)
        return pid

    def attach(self, pid: int) -> list[int]:
        """Seize every thread of a running process and interrupt it (no seccomp: it is already running)."""
        from ..errors import InvalidParameter, TraceError

        self._attached = True
        self.use_seccomp = False
        try:
            tids = sorted(int(x) for x in os.listdir(f"/proc/{pid}/task"))
        except OSError:
            raise InvalidParameter(f"no process with pid {pid}", hint="check the pid with `ps -p PID`") from None
        if pid == os.getpid():
            raise InvalidParameter("the tracer cannot attach to itself", hint="pass another process's pid")
        try:
            for tid in tids:
                P.seize(tid, self.options())
                t = Task(tid)
                t.tgid = pid
                self.tasks[tid] = t
                P.interrupt(tid)
        except P.PtraceError as e:
            self._detach_all()  # let go of the threads already seized
            why = os.strerror(e.errno) if e.errno else str(e)
            raise TraceError(
                f"cannot attach to pid {pid}: {why}",
                hint="attach to a process of your own that no debugger (strace, gdb, another k3snb tracer) "
                     "traces, not pid 1 of a namespace or an ancestor of the tracer; else check "
                     "CAP_SYS_PTRACE, kernel.yama.ptrace_scope and the seccomp profile",
            ) from None
        self.root = pid
        try:
            self.exe[pid] = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            self.exe[pid] = "?"
        self.stats["tasks"] += len(tids)
        return tids

    # -- the loop -------------------------------------------------------------------------------
    def _resume(self, t: Task, sig: int = 0) -> None:
        if not self.use_seccomp or t.expect != EXPECT_NONE:
            P.syscall(t.tid, sig)
        else:
            P.cont(t.tid, sig)

    def _forget(self, tid: int) -> Task | None:
        t = self.tasks.pop(tid, None)
        if t is not None:
            for fd in (t.memfd, t.wmemfd):
                if fd >= 0:
                    os.close(fd)
        return t

    def kill_all(self) -> None:
        for tid in list(self.tasks):
            with contextlib.suppress(OSError):
                os.kill(tid, signal.SIGKILL)

    def _on_signal(self, signum, frame) -> None:
        if self._attached:
            self._request_stop()
            return
        self._forwarded += 1
        if self._forwarded >= 3 and signum == signal.SIGINT:
            self.kill_all()  # third Ctrl-C: stop asking
            return
        # every traced process, not just the root: `sh -c 'k3s server'` must stop too
        self._sent_sig = signum
        self.signal_tree(signum)
        if self.grace is not None:
            self._arm_kill(self.grace)

    def signal_tree(self, signum: int) -> None:
        """Send ``signum`` once to every traced process (thread groups, not threads)."""
        for pid in {self._tgid(t) for t in list(self.tasks.values())}:
            with contextlib.suppress(OSError):
                os.kill(pid, signum)

    def _late_signal(self, child: Task) -> None:
        # a process forked while the signal was on its way was not in the set signalled above
        if self._sent_sig and self._tgid(child) == child.tid:
            with contextlib.suppress(OSError):
                os.kill(child.tid, self._sent_sig)

    @staticmethod
    def _arm_kill(after: float) -> None:
        # SIGALRM kills the tree; keep whichever deadline (grace, linger) comes first
        left = signal.getitimer(signal.ITIMER_REAL)[0]
        if left == 0 or after < left:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, after))

    def _on_alarm(self, signum, frame) -> None:
        if self._attached:
            self._request_stop()
        else:
            self.kill_all()

    def _request_stop(self) -> None:
        self._stop_attach = True
        if self._in_wait:  # break out of waitpid; outside it the loop checks the flag
            raise _StopAttach

    def loop(self, until: float | None = None) -> int | None:
        """Run until no traced task is left (or ``until``, a monotonic deadline, in attach mode)."""
        old = {s: signal.signal(s, self._on_signal) for s in FORWARDED}
        old_alarm = signal.signal(signal.SIGALRM, self._on_alarm)
        self._stop_attach = False
        self._in_wait = False
        if until is not None:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, until - time.monotonic()))
        try:
            self._loop()
        except _StopAttach:
            self._in_wait = False
            self._detach_all()
        except BaseException:
            if not self._attached:
                self.kill_all()
                self._reap_rest()
            raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_alarm)
            for s, h in old.items():
                signal.signal(s, h)
            for tid in list(self.tasks):
                self._forget(tid)
        return self.root_status

    def _reap_rest(self) -> None:
        deadline = time.monotonic() + 5
        while self.tasks and time.monotonic() < deadline:
            try:
                tid, st = os.waitpid(-1, P.WALL)
            except ChildProcessError:
                break
            if os.WIFEXITED(st) or os.WIFSIGNALED(st):
                self._forget(tid)

    def _loop(self) -> None:
        tasks = self.tasks
        use_seccomp = self.use_seccomp
        before_entry = self.features.seccomp_before_entry
        stats = self.stats
        PtraceError = P.PtraceError
        while tasks:
            if self._attached and self._stop_attach:
                self._detach_all()
                return
            self._in_wait = True
            try:
                tid, st = os.waitpid(-1, P.WALL)
            except ChildProcessError:
                return
            finally:
                self._in_wait = False
            stats["stops"] += 1
            t = tasks.get(tid)
            if os.WIFEXITED(st) or os.WIFSIGNALED(st):
                if t is None:
                    continue
                if os.WIFEXITED(st):
                    self._event(t, "exit", os.WEXITSTATUS(st))
                else:
                    self._event(t, "killed", -os.WTERMSIG(st), D.signal_name(os.WTERMSIG(st)))
                self._forget(tid)
                if tid == self.root:
                    self.root_status = st
                    if self.linger is not None and tasks:
                        self._arm_kill(self.linger)
                continue
            if t is None:  # an auto-attached child can report before its parent's fork event
                t = Task(tid)
                tasks[tid] = t
                stats["tasks"] += 1
            sig = os.WSTOPSIG(st)
            ev = st >> 16
            try:
                if sig == P.SYSCALL_TRAP:
                    regs = P.getregs(tid)
                    if use_seccomp:
                        if t.expect == EXPECT_ENTER:
                            t.expect = EXPECT_EXIT
                            P.syscall(tid)
                        elif t.expect == EXPECT_EXIT:
                            t.expect = EXPECT_NONE
                            self.on_exit(t, regs)
                            P.cont(tid)
                        else:
                            P.cont(tid)
                    else:
                        # entry stops have rax = -ENOSYS; after an attach we may first see an exit
                        if not t.in_sys and regs.rax == NEG_ENOSYS:
                            t.in_sys = True
                            if not self.on_entry(t, regs):
                                t.nr = -1
                        else:
                            t.in_sys = False
                            if t.nr >= 0:
                                self.on_exit(t, regs)
                            t.nr = -1
                        P.syscall(tid)
                elif ev == P.EVENT_SECCOMP:
                    regs = P.getregs(tid)
                    if self.on_entry(t, regs):
                        t.expect = EXPECT_ENTER if before_entry else EXPECT_EXIT
                        P.syscall(tid)
                    else:
                        P.cont(tid)
                elif ev == 0:
                    # signal-delivery-stop: give the signal back (never swallow it)
                    if sig == signal.SIGSTOP and not t.started:
                        t.started = True
                        self._resume(t)
                    elif sig == signal.SIGCONT and tid == self.root and not self._root_cont_seen:
                        self._root_cont_seen = True  # our own SIGCONT from the seize handshake
                        self._resume(t, sig)
                    else:
                        if self.record is not None:
                            self._event(t, "signal", sig, D.signal_name(sig))
                        self._resume(t, sig)
                elif ev == P.EVENT_STOP:
                    if not t.started:
                        t.started = True
                        self._resume(t)
                    elif sig in GROUP_STOP_SIGS:
                        P.listen(tid)  # keep it stopped (job control) without blocking our loop
                    else:
                        self._resume(t)
                elif ev in (P.EVENT_FORK, P.EVENT_VFORK, P.EVENT_CLONE):
                    new = P.geteventmsg(tid)
                    child = tasks.get(new)
                    if child is None:
                        child = Task(new)
                        tasks[new] = child
                        stats["tasks"] += 1
                    if ev != P.EVENT_CLONE:
                        child.tgid = new  # fork/vfork children are processes; clone may be a thread
                    if self._sent_sig:
                        self._late_signal(child)
                    if self.record is not None:
                        child.ppid = self._tgid(t)
                        cpid = self._tgid(child)
                        if cpid not in self.exe:
                            self.exe[cpid] = self.exe.get(child.ppid)
                        self._event(child, {P.EVENT_FORK: "fork", P.EVENT_VFORK: "vfork"}.get(ev, "clone"),
                                    None, f"from {tid}")
                    self._resume(t)
                elif ev == P.EVENT_EXEC:
                    former = P.geteventmsg(tid)
                    if former != tid and former in tasks:
                        # a non-leader thread exec'd: it now has the leader's tid; keep its state
                        old = self._forget(former)
                        prev = tasks.get(tid)
                        if prev is not None:
                            self._forget(tid)
                        t = Task(tid, old.ppid)
                        t.started, t.expect, t.in_sys, t.nr, t.args, t.t0 = (
                            True, old.expect, old.in_sys, old.nr, old.args, old.t0)
                        t.restore, t.paths, t.note = old.restore, old.paths, old.note
                        tasks[tid] = t
                    for fd in (t.memfd, t.wmemfd):  # the old fds point at the dead mm
                        if fd >= 0:
                            os.close(fd)
                    t.memfd = t.wmemfd = -1
                    t.tgid = tid
                    stats["execs"] += 1
                    if self.record is not None:
                        with contextlib.suppress(OSError):
                            self.exe[tid] = os.readlink(f"/proc/{tid}/exe")
                        self._event(t, "exec", None, self.exe.get(tid))
                    self._resume(t)
                else:
                    self._resume(t)
            except PtraceError as e:
                if e.errno != _errno.ESRCH:  # ESRCH: killed meanwhile; waitpid will report it
                    raise

    def _detach_all(self) -> None:
        # a tracee already in a stop (its status maybe consumed) detaches at once; the others are
        # interrupted, waited for and detached; they then run on untouched
        for tid in list(self.tasks):
            t = self.tasks[tid]
            if t.restore:
                continue
            try:
                P.detach(tid, 0)
                self._forget(tid)
                continue
            except P.PtraceError:
                pass
            try:
                P.interrupt(tid)
            except P.PtraceError:
                self._forget(tid)
        while self.tasks:
            try:
                tid, st = os.waitpid(-1, P.WALL)
            except ChildProcessError:
                break
            t = self.tasks.get(tid)
            if t is None:
                continue
            if os.WIFEXITED(st) or os.WIFSIGNALED(st):
                self._forget(tid)
                continue
            sig = os.WSTOPSIG(st)
            ev = st >> 16
            if t.restore:  # put back the original pointer before letting go
                try:
                    regs = P.getregs(tid)
                    for reg, val in t.restore:
                        setattr(regs, reg, val)
                    P.setregs(tid, regs)
                except P.PtraceError:
                    pass
            try:
                pass_sig = sig if (ev == 0 and sig not in (P.SYSCALL_TRAP, signal.SIGTRAP)) else 0
                P.detach(tid, pass_sig)
            except P.PtraceError:
                pass
            self._forget(tid)


def exit_like(status: int | None) -> int:
    """Turn a wait status into our own exit: same code, or re-raise the same signal."""
    if status is None:
        return 1
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    sig = os.WTERMSIG(status)
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), sig)
    return 128 + sig
