"""``intercept(cmd, rules)``: run a command with paths redirected, files faked, statfs spoofed.

For long-running use (k3s), start the tracer directly in the background instead, e.g. through
``runner.spawn``::

    save_rules("rules.json", rules)
    runner.spawn([*tracer_argv(runner.python), "intercept", "--rules", "rules.json",
                  "--log", "icept.log", "--", "k3s", "server", ...])

(``tracer_argv`` from ``k3snb.tracing._launch`` is ``python -m k3snb.tracing`` without site start-up.)

It exits with k3s's own status, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT to it, and if the tracer
is killed the whole tree dies with it (PTRACE_O_EXITKILL).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..report import Rich, render
from ._launch import Cmd, OutDir, argv_of, rule_opts, run_tracer
from ._rules import Rule

if TYPE_CHECKING:
    import pandas as pd

    from ..runners.base import Runner


@dataclass(eq=False, repr=False)
class InterceptResult(Rich):
    """What an intercepted run did: exit status, output, and one log line per rewrite."""

    command: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    log: list[str]
    runner: str = "local"
    meta: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False

    _title_text = "intercept"

    @property
    def stats(self) -> dict[str, int]:
        return self.meta.get("stats", {})

    @property
    def features(self) -> dict[str, Any]:
        return self.meta.get("features", {})

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = []
        for line in self.log:
            parts = line.split(" ", 3)
            rows.append({"time": parts[1] if len(parts) > 1 else "", "what": parts[3] if len(parts) > 3 else line,
                         "tid": parts[2].strip("[]") if len(parts) > 2 else ""})
        return pd.DataFrame(rows, columns=["time", "tid", "what"])

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {"runner": self.runner, "returncode": self.returncode, "rewrites": s.get("rewrites"),
                "statfs_spoofed": s.get("statfs_spoofed"), "errno_forced": s.get("errno_forced"),
                "tasks": s.get("tasks"), "seccomp": self.meta.get("seccomp"),
                "wall_s": round(self.meta.get("wall_s", 0.0), 3)}

    def _repr_text(self) -> str:
        return (f"<InterceptResult rc={self.returncode} rewrites={self.stats.get('rewrites')} "
                f"{self.runner}: {' '.join(self.command)[:60]!r}>")

    def _repr_html_(self) -> str:
        return render(f"intercept: {' '.join(self.command)}", self.summary(),
                      [("rewrites", self.to_frame()), ("stdout", self.stdout or "(empty)"),
                       ("stderr", self.stderr or "(empty)")], text=self._repr_text())


def intercept(cmd: Cmd, rules: Sequence[Rule] = (), *, runner: Runner | str | None = None, seccomp: bool | None = None,
              timeout: float | None = None, env: Mapping[str, str] | None = None, cwd: str | None = None,
              linger: float | None = None, input: str | bytes | None = None,
              out: str | os.PathLike | None = None) -> InterceptResult:
    """Run ``cmd`` with ``rules`` applied to it and all its descendants.

    Args:
        cmd: a shell string or argv list.
        rules: :class:`Rule` objects (redirect / fake / statfs / fail).
        runner: None (this machine), "host", "gvisor" or a Runner; redirect targets must exist
            in the tracee's own mount namespace (inside the runner, or inside a container rootfs).
        seccomp: None = use a seccomp filter when available (fast), False = stop at every syscall.
        linger: after the command exits, kill leftover descendants after this many seconds.

    Returns:
        InterceptResult with ``returncode`` exactly as the command's (negative = killed by signal).
    """
    argv = argv_of(cmd)
    d = OutDir("intercept", out)
    try:
        files = d.path
        opts = ["--meta", str(files / "meta.json"), "--log", str(files / "intercept.log")]
        opts += rule_opts(rules, files)
        if seccomp is False:
            opts.append("--no-seccomp")
        if linger is not None:
            opts += ["--linger", str(linger)]
        res, meta = run_tracer("intercept", opts, argv, runner=runner, timeout=timeout, env=env, cwd=cwd,
                               files=files, input=input)
        logf = files / "intercept.log"
        log = logf.read_text().splitlines() if logf.exists() else []
    finally:
        if out is None:
            d.remove()
    return InterceptResult(argv, res.returncode, res.stdout, res.stderr, log, res.runner, meta, res.timed_out)
