"""Syscall entry/exit decisions: rewrite path arguments, force errnos, spoof statfs f_type."""

from __future__ import annotations

import errno as _errno
import os
import time
from typing import TYPE_CHECKING

from . import _decode as D
from . import _ptrace as P
from ._memory import RED_ZONE_GAP
from ._resolve import abspath
from ._task import Task

if TYPE_CHECKING:
    from ._match import RuleSet
    from ._memory import Memory

ARG_REGS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
EXIT_NRS = {D.SYSCALL_NUMBERS["exit"], D.SYSCALL_NUMBERS["exit_group"]}
FORCE_NR = D.SYSCALL_NUMBERS["getpid"]  # what runs instead of a call whose errno is forced


class Policy:
    """Engine part: what happens at each syscall stop. Uses the engine's ``ruleset``, ``mem``,
    ``record``/``syscalls``, ``stats`` and ``log``; recording is the :class:`~._rows.Recorder` part."""

    ruleset: RuleSet
    mem: Memory

    def on_entry(self, t: Task, regs) -> bool:
        """Decide at the syscall entry (or seccomp stop); True if the exit stop is needed."""
        rs = self.ruleset
        mem = self.mem
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
        if spec is not None and (rs.has_path_rules or recording):
            args = (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)
            paths = []
            new = []
            for ai, di in spec:
                raw = mem.read_str(t, args[ai])
                paths.append(raw)
                if raw is None or not rs.has_path_rules:
                    continue
                if raw.startswith(b"/") and b"/." not in raw and b"//" not in raw:
                    ap = raw
                else:
                    if rs.only_exact and not raw.startswith(b"/") and \
                            raw.rstrip(b"/").rsplit(b"/", 1)[-1] not in rs.leaves:
                        continue
                    ap = abspath(t.tid, raw, D._s32(args[di]) if di is not None else None)
                if ap is None or not ap.startswith(rs.roots):
                    continue
                if rs.errno_path and nr in rs.errno_path_nrs:
                    sp_ = os.fsdecode(ap)
                    for r in rs.errno_path_nrs[nr]:
                        if r.matches(sp_):
                            t.force_errno = getattr(_errno, r.errno)
                            break
                target = rs.match_redirect(ap)
                if target is not None:
                    new.append((ai, raw, target))
                if nr == D.STATFS_NR:
                    for pre, to in rs.statfs_path:
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
                    mem.write_mem(t, sp, data)
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
        if nr == D.FSTATFS_NR and rs.statfs_path:
            try:
                ap = os.readlink(f"/proc/{t.tid}/fd/{D._s32(regs.rdi)}".encode())
                for pre, to in rs.statfs_path:
                    if ap == pre or ap.startswith(pre + b"/"):
                        t.post_statfs = to
            except OSError:
                pass
        if (nr == D.STATFS_NR or nr == D.FSTATFS_NR) and (t.post_statfs is not None or rs.statfs_type):
            need_exit = True
        code = rs.errno_nr.get(nr)
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
        """At the exit stop: put the argument registers back, set a forced errno, patch statfs f_type."""
        rs = self.ruleset
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
                ftype = int.from_bytes(self.mem.read_mem(t, buf, 8), "little")
                to = t.post_statfs if t.post_statfs is not None else rs.statfs_type.get(ftype)
                if to is not None and to != ftype:
                    self.mem.poke_partial(t, buf, to.to_bytes(8, "little"))
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
