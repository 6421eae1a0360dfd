"""``trace(cmd)`` -> :class:`Trace`: syscalls and process events of a whole tree, as a DataFrame.

The rows live in an Arrow IPC file written by the tracer in batches; the DataFrame is built on
first use and the views (failures, files, tree) read only the columns they need.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidParameter
from ..report import Rich, render
from ._launch import Cmd, OutDir, argv_of, rule_opts, run_tracer
from ._rules import Rule
from ._store import FIELDS, convert, open_table

if TYPE_CHECKING:
    import pandas as pd

    from ..runners.base import Runner

_PROC_PID = re.compile(r"^/proc/\d+(?=/|$)")


@dataclass(eq=False, repr=False)
class Trace(Rich):
    """A recorded trace. ``.df`` is the full DataFrame (one row per syscall or process event).

    Views: :meth:`failures` (failing syscalls by errno and path), :meth:`files` (paths touched),
    :meth:`tree` (processes with parent, executable, exit), :meth:`events` (fork/clone/exec/exit/
    signal), :meth:`rewrites` (what interception changed). ``a.diff(b)`` (or ``diff_traces(a, b)``)
    compares two traces.
    """

    path: Path
    command: list[str]
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    runner: str = "local"
    meta: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False
    _df: Any = field(default=None, repr=False)

    _title_text = "trace"

    # -- data -------------------------------------------------------------------------------------
    @property
    def df(self) -> pd.DataFrame:
        """All rows as a pandas DataFrame (loaded once, from the memory-mapped Arrow file)."""
        if self._df is None:
            self._df = self.to_frame()
        return self._df

    def to_frame(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows as a DataFrame; ``columns`` limits what is materialised (large traces)."""
        if columns is not None:
            bad = set(columns) - set(FIELDS)
            if bad:
                raise InvalidParameter(f"unknown trace column(s) {sorted(bad)}; valid: {', '.join(FIELDS)}",
                                       hint="see Trace.columns")
        if self._df is not None and columns is None:
            return self._df
        if not self.path.exists():
            import pandas as pd

            return pd.DataFrame(columns=list(columns or FIELDS))
        import pandas as pd
        import pyarrow as pa

        ints = {pa.int64(): pd.Int64Dtype()}  # nullable ints: ret/fd stay integers next to NaN
        df = open_table(self.path, list(columns) if columns else None).to_pandas(types_mapper=ints.get)
        if "time" in df.columns:
            # rows are written at the exit stop; order them by when the call (or event) began
            df = df.sort_values("time", kind="stable").reset_index(drop=True)
        return df

    columns = FIELDS

    def syscalls(self) -> pd.DataFrame:
        """The syscall rows only (process events left out)."""
        d = self.df
        return d[d.event == "syscall"].reset_index(drop=True)

    def events(self) -> pd.DataFrame:
        """The process events only: fork/clone/exec/exit/signal rows."""
        d = self.df
        return d[d.event != "syscall"].reset_index(drop=True)

    def failures(self) -> pd.DataFrame:
        """Failing syscalls grouped by errno, syscall and path, most frequent first."""
        d = self.to_frame(["event", "syscall", "errno", "path", "exe", "pid"]) if self._df is None else self.df
        d = d[(d.event == "syscall") & d.errno.notna()]
        if d.empty:
            return _empty(["errno", "syscall", "path", "count", "pids", "exe"])
        g = d.groupby(["errno", "syscall", d.path.fillna("")], sort=False).agg(
            count=("pid", "size"), pids=("pid", "nunique"), exe=("exe", "first"))
        return g.reset_index().sort_values(["count", "errno"], ascending=[False, True]).reset_index(drop=True)

    def files(self) -> pd.DataFrame:
        """Paths touched by any path syscall: how often, by which syscalls, how many failed."""
        d = self.to_frame(["event", "syscall", "errno", "path"]) if self._df is None else self.df
        d = d[(d.event == "syscall") & d.path.notna()]
        if d.empty:
            return _empty(["path", "count", "failed", "syscalls"])
        g = d.groupby("path").agg(count=("syscall", "size"), failed=("errno", "count"),
                                  syscalls=("syscall", lambda s: ",".join(sorted(set(s)))))
        return g.reset_index().sort_values("count", ascending=False).reset_index(drop=True)

    def tree(self) -> pd.DataFrame:
        """One row per process: pid, parent, executables run, number of syscalls, exit status."""
        d = self.df
        if d.empty:
            return _empty(["pid", "parent", "exe", "execs", "threads", "syscalls", "exit"])
        rows = []
        for pid, g in d.groupby("pid", sort=False):
            ev = g.event
            ex = g[ev == "exec"].detail.tolist()
            ends = g[(ev.isin(["exit", "killed"])) & (g.tid == pid)]
            end = None
            if not ends.empty:
                last = ends.iloc[-1]
                end = f"signal {last.detail}" if last.event == "killed" else int(last.ret)
            parents = g.parent[g.parent > 0]
            rows.append({"pid": int(pid), "parent": int(parents.iloc[0]) if not parents.empty else 0,
                         "exe": ex[-1] if ex else g.exe.dropna().iloc[0] if g.exe.notna().any() else None,
                         "execs": len(ex), "threads": int(g.tid.nunique()),
                         "syscalls": int((ev == "syscall").sum()), "exit": end})
        return _frame(rows)

    def rewrites(self) -> pd.DataFrame:
        """Syscalls the interceptor changed (redirected path, faked file, spoofed statfs, forced errno)."""
        d = self.df
        return d[d.detail.notna() & (d.event == "syscall")].reset_index(drop=True)

    def diff(self, other: Trace, *, names: tuple[str, str] = ("a", "b")) -> TraceDiff:
        """What fails only here or only in ``other`` (see :func:`diff_traces`)."""
        return diff_traces(self, other, names=names)

    def close(self) -> None:
        """Delete the trace's files now (kept DataFrames stay usable); also done when collected."""
        fin = getattr(self, "_finalizer", None)
        if fin is not None:
            fin()

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pids(self) -> list[int]:
        return sorted(int(p) for p in self.to_frame(["pid"]).pid.unique())

    def check(self) -> Trace:
        """Return self if the traced command exited 0, else raise CommandFailed."""
        from ..errors import CommandFailed

        if self.returncode != 0:
            raise CommandFailed(f"traced command exited {self.returncode}: {' '.join(self.command)[:200]}",
                                hint="look at trace.failures() and trace.stderr", runner=self.runner)
        return self

    # -- presentation --------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        st = self.meta.get("stats", {})
        return {"runner": self.runner, "returncode": self.returncode, "rows": self.meta.get("rows"),
                "processes": st.get("tasks"), "execs": st.get("execs"),
                "wall_s": round(self.meta.get("wall_s", 0.0), 3), "seccomp": self.meta.get("seccomp")}

    def _repr_text(self) -> str:
        return (f"<Trace {self.meta.get('rows', 0)} rows, {self.meta.get('stats', {}).get('tasks', 0)} tasks, "
                f"rc={self.returncode}, {self.runner}: {' '.join(self.command)[:60]!r}>")

    def _repr_html_(self) -> str:
        sections = [("failing syscalls", self.failures().head(200)), ("process tree", self.tree()),
                    ("files", self.files().head(200))]
        if self.stderr:
            sections.append(("stderr", self.stderr[-4000:]))
        return render(f"trace: {' '.join(self.command)}", self.summary(), sections, text=self._repr_text())


def _frame(rows):
    import pandas as pd

    return pd.DataFrame(rows)


def _empty(cols):
    import pandas as pd

    return pd.DataFrame(columns=cols)


def trace(cmd: Cmd | None = None, *, runner: Runner | str | None = None, syscalls: str | Sequence[str] | None = None,
          follow: bool = True, rules: Sequence[Rule] = (), seccomp: bool | None = None,
          pid: int | None = None, duration: float | None = None, timeout: float | None = None,
          env: Mapping[str, str] | None = None, cwd: str | None = None, out: str | os.PathLike | None = None,
          input: str | bytes | None = None, batch: int = 20_000) -> Trace:
    """Run ``cmd`` under the tracer and return its :class:`Trace`.

    Args:
        cmd: a shell string or an argv list (omit with ``pid=``).
        runner: None (this machine, no namespaces), "host", "gvisor" or a Runner.
        syscalls: None = all; names and ``%categories`` (``"%file"``, ``["openat", "%process"]``).
            With a subset, a seccomp filter makes only those stop.
        follow: follow forks, vforks, clones (threads) and execs, also into new namespaces.
        rules: interception rules applied while tracing (rows show the rewrite in ``detail``).
        pid: attach to a running process instead (its threads; children it forks later too);
            ``duration`` seconds, then detach (the process keeps running).
        out: keep the Arrow file in this directory (default: a temp dir removed with the Trace).
        batch: rows the tracer holds before writing a batch (its memory bound).

    Raises:
        InvalidParameter: bad syscall names, empty command, both/neither of cmd and pid.
        TraceError: the tracer could not start (no ptrace permission, unsupported CPU).
    """
    if (cmd is None) == (pid is None):
        raise InvalidParameter("pass exactly one of cmd or pid", hint="trace('ls /') or trace(pid=1234, duration=5)")
    from ._decode import resolve_syscalls

    if syscalls is not None:
        resolve_syscalls(syscalls)  # validate here, with a clear error, before starting anything
    d = OutDir("trace", out)
    try:
        files = d.path
        opts = ["--out", str(files / "trace.rows"), "--meta", str(files / "meta.json"), "--batch", str(int(batch))]
        if syscalls is not None:
            opts += ["--syscalls", syscalls if isinstance(syscalls, str) else ",".join(syscalls)]
        if not follow:
            opts.append("--no-follow")
        if seccomp is False:
            opts.append("--no-seccomp")
        opts += rule_opts(rules, files)
        if pid is not None:
            opts += ["--attach", str(int(pid))] + (["--duration", str(duration)] if duration else [])
            argv: list[str] = []
        else:
            argv = argv_of(cmd)
        res, meta = run_tracer("trace", opts, argv, runner=runner, timeout=timeout, env=env, cwd=cwd,
                               files=files, input=input)
        rows = files / "trace.rows"
        if rows.exists():  # convert here, where pyarrow is cheap to have, batch by batch
            convert(rows, files / "trace.arrow")
            rows.unlink()
    except BaseException:
        d.remove()
        raise
    t = Trace(path=files / "trace.arrow", command=argv or [f"pid {pid}"], returncode=res.returncode,
              stdout=res.stdout, stderr=res.stderr, runner=res.runner, meta=meta, timed_out=res.timed_out)
    d.attach_to(t)
    return t


# -- diff -----------------------------------------------------------------------------------------
@dataclass(eq=False, repr=False)
class TraceDiff(Rich):
    """What fails in only one of two traces (keys: executable name, syscall, normalised path)."""

    a_name: str
    b_name: str
    only_a: Any
    only_b: Any
    first_divergence: dict[str, Any] | None

    _title_text = "trace diff"

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        a = self.only_a.assign(side=self.a_name)
        b = self.only_b.assign(side=self.b_name)
        return pd.concat([a, b], ignore_index=True)

    def summary(self) -> dict[str, Any]:
        fd = self.first_divergence
        return {f"fail only in {self.a_name}": len(self.only_a), f"fail only in {self.b_name}": len(self.only_b),
                "first divergence": None if fd is None else
                f"{fd['exe']}: {fd['syscall']}({fd['path']}) {fd[self.a_name]} vs {fd[self.b_name]}"}

    def _repr_html_(self) -> str:
        return render(f"diff {self.a_name} vs {self.b_name}", self.summary(),
                      [(f"fails only in {self.a_name}", self.only_a), (f"fails only in {self.b_name}", self.only_b)],
                      text=self._repr_text())


def _keyed(t: Trace):
    d = t.to_frame(["time", "event", "exe", "syscall", "path", "errno"])
    d = d[d.event == "syscall"].copy()
    d["exe"] = d.exe.fillna("").map(lambda e: os.path.basename(e))
    d["path"] = d.path.fillna("").map(lambda p: _PROC_PID.sub("/proc/PID", p))
    d["outcome"] = d.errno.fillna("ok")
    return d


def diff_traces(a: Trace, b: Trace, *, names: tuple[str, str] = ("a", "b")) -> TraceDiff:
    """Compare two traces of the same workload (e.g. host vs gVisor).

    Returns failing (exe, syscall, path, errno) combinations seen only in ``a`` or only in ``b``,
    and the first call, in ``a``'s order, whose outcome differs in ``b`` for the same
    (exe, syscall, path) — "where do the two environments start to diverge".
    """
    for x in (a, b):
        if not isinstance(x, Trace):
            raise InvalidParameter(f"diff_traces() wants two Trace objects, got {type(x).__name__}",
                                   hint="pass the results of k3snb.trace(...)")
    na, nb = names
    da, db = _keyed(a), _keyed(b)
    key = ["exe", "syscall", "path"]
    fa = da[da.outcome != "ok"].groupby(key + ["errno"]).size().rename("count").reset_index()
    fb = db[db.outcome != "ok"].groupby(key + ["errno"]).size().rename("count").reset_index()
    ka = set(map(tuple, fa[key + ["errno"]].values.tolist()))
    kb = set(map(tuple, fb[key + ["errno"]].values.tolist()))
    only_a = fa[[tuple(r) not in kb for r in fa[key + ["errno"]].values.tolist()]].reset_index(drop=True)
    only_b = fb[[tuple(r) not in ka for r in fb[key + ["errno"]].values.tolist()]].reset_index(drop=True)
    first_b = db.drop_duplicates(key).set_index(key).outcome.to_dict()
    first = None
    for row in da.drop_duplicates(key).sort_values("time").itertuples(index=False):
        k = (row.exe, row.syscall, row.path)
        ob = first_b.get(k)
        if ob is not None and ob != row.outcome:
            first = {"exe": row.exe, "syscall": row.syscall, "path": row.path, na: row.outcome, nb: ob,
                     "time": float(row.time)}
            break
    return TraceDiff(na, nb, only_a, only_b, first)
