"""The stage model of one container start: which stages were reached, in order, and why it stopped.

Stage names and the patterns that attribute a runtime's error text to a stage are data
(``k3snb/data/runtime_stages.yaml``). Stages before the failing one are ``ok``; the failing one is
``failed`` with its error text, blocker signature (:func:`k3snb.classify`) and, with tracing, the
failing syscall; later ones are ``not reached``. A step that does not end within its time limit is
its own outcome (``timed out``, :meth:`Attempt.time_out`): the stage it was in comes from the runtime's
own state of the container, never from error text (there is none).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..report import Rich, render

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["STAGES", "Attempt", "attribute", "stage_labels"]

OK, FAILED, NOT_REACHED, SKIPPED, TIMED_OUT = "ok", "failed", "not reached", "n/a", "timed out"


@cache
def _data() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(resources.files("k3snb").joinpath("data/runtime_stages.yaml").read_text())


def stage_labels() -> dict[str, str]:
    """Stage id -> its human label, in stage order (from k3snb/data/runtime_stages.yaml)."""
    return {s["id"]: s["label"] for s in _data()["stages"]}


STAGES: tuple[str, ...] = tuple(s["id"] for s in _data()["stages"])


def attribute(text: str, default: str) -> str:
    """The stage a failing step's error text belongs to (first matching pattern), else ``default``.

    Only stages at or after ``default`` are considered: a step cannot fail at a stage it had passed.
    """
    start = STAGES.index(default)
    text = _log_text(text)
    for rule in _data()["attribution"]:
        if STAGES.index(rule["stage"]) >= start and re.search(rule["pattern"], text, re.I):
            return rule["stage"]
    return default


# a logrus line (containerd, runc's text log): time=… level=… msg="…" error="…" plus fields of context
_LOGRUS = re.compile(r'^time="?[^"\s]+"?\s+level=\w+\s')
_QUOTED = re.compile(r'\b(msg|error|err)=("(?:[^"\\]|\\.)*"|\S+)')


def _log_text(text: str) -> str:
    """Only what a log line says (its msg/error values): its fields (``namespace=k8s.io``, ``id=…``,
    ``runtime=io.containerd.runc.v2``) name where it happened, not what failed. Other lines stay whole."""
    out = []
    for ln in text.splitlines():
        out.append(" ".join(v for _, v in _QUOTED.findall(ln)) if _LOGRUS.match(ln) else ln)
    return "\n".join(out)


def _syscalls_for(stage: str) -> list[str]:
    for rule in _data()["attribution"]:
        if rule["stage"] == stage:
            return list(rule.get("syscalls") or [])
    return []


_MS = {0x1: "MS_RDONLY", 0x2: "MS_NOSUID", 0x4: "MS_NODEV", 0x8: "MS_NOEXEC", 0x20: "MS_REMOUNT",
       0x1000: "MS_BIND", 0x2000: "MS_MOVE", 0x4000: "MS_REC", 0x40000: "MS_PRIVATE", 0x80000: "MS_SLAVE",
       0x100000: "MS_SHARED", 0x400: "MS_NOATIME", 0x200000: "MS_RELATIME"}


def mount_flags(value: int) -> str:
    """mount(2) flags as ``MS_BIND|MS_REC`` text; unknown bits stay as one hex number."""
    names = [n for bit, n in _MS.items() if value & bit]
    rest = value & ~sum(_MS)
    return "|".join(names + ([hex(rest)] if rest else [])) or "0"


def failing_syscall(trace: Any, stage: str, message: str = "") -> dict[str, Any] | None:
    """The last failing call of the stage's syscalls (else of the fallback list) in a Trace; None if none."""
    try:
        d = trace.syscalls()
    except Exception:
        return None
    if d.empty:
        return None
    d = d[d.errno.notna()]
    # 1. a failing call on a path the error message names (first one: later ones are often cleanup)
    named = d[[bool(message) and any(isinstance(p, str) and len(p) > 1 and p in message for p in (r.path, r.path2))
               for r in d.itertuples()]]
    if not named.empty:
        # prefer the stage's own syscalls, then real errors over lookups that just found nothing
        pick = named[named.syscall.isin(_syscalls_for(stage))]
        if pick.empty:
            pick = named[~named.errno.isin(_data()["noise_errnos"])]
        row = (pick if not pick.empty else named).iloc[0]
    else:
        # 2. the last failure of the stage's syscalls, else of the fallback list (noise errnos left out)
        d = d[~d.errno.isin(_data()["noise_errnos"])]
        cand = d[d.syscall.isin(_syscalls_for(stage))]
        if cand.empty:
            cand = d[d.syscall.isin(_data()["fallback_syscalls"])]
        if cand.empty:
            return None
        row = cand.iloc[-1]
    out = {k: (None if v is None or v != v else v) for k, v in row.items()
           if k in ("syscall", "args", "path", "path2", "errno", "exe", "ret")}
    out["ret"] = None if out.get("ret") is None else int(out["ret"])
    if out.get("syscall") == "mount" and out.get("args"):
        with contextlib.suppress(ValueError, IndexError):
            out["flags"] = mount_flags(int(str(out["args"]).split(",")[3].strip(), 0))
    return out


@dataclass(repr=False)
class Attempt(Rich):
    """One attempt to run a container: stages reached in order, output, and what stopped it."""

    runner: str
    runtime: str
    via: str
    image: str
    args: list[str]
    snapshotter: str | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    failed_stage: str | None = None
    error: str | None = None
    signature: str | None = None
    signatures: list[str] = field(default_factory=list)
    syscall: dict[str, Any] | None = None
    cgroups: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    log: str = ""
    # the step in failed_stage did not end within its limit (error: "timed out after N s …")
    timed_out: bool = False
    # what ran, as measured inside the runner: {"runc": "1.1.5+ds1", "containerd": "1.6.20~ds1"}
    # (a program whose version was never read is absent, never guessed)
    versions: dict[str, str] = field(default_factory=dict)
    _title_text = "container start"

    # -- building ------------------------------------------------------------------------------
    def passed(self, stage: str, seconds: float | None = None, detail: str = "") -> None:
        self._set(stage, OK, seconds, detail)

    def skipped(self, stage: str, detail: str = "") -> None:
        self._set(stage, SKIPPED, None, detail)

    def fail(self, step_stage: str, text: str, *, seconds: float | None = None, context: str = "") -> str:
        """Record a failing step: attribute its text to a stage, classify it; returns the stage.

        ``text`` is the step's own error output (message and stage come from it); ``context`` (e.g.
        the daemon's log lines of that moment) only adds signatures, and the stage when text has none.
        """
        stage = attribute(text, step_stage)
        if stage == step_stage and context:
            stage = attribute(context, step_stage)
        for s in STAGES[STAGES.index(step_stage):STAGES.index(stage)]:
            self._set(s, OK, None, "passed (the failure is later)")
        # never an empty message: the daemon's log line, else say that the step printed none
        msg = (_message(text) or _message(_log_text(context), errors_only=True)
               or f"{step_stage} step failed without an error message")
        self._set(stage, FAILED, seconds, msg)
        self.failed_stage, self.error = stage, msg
        self.signatures = _classify(text + "\n" + context)
        self.signature = self.signatures[0] if self.signatures else None
        return stage

    def time_out(self, limit: float, state: str | None, *, seconds: float | None = None, output: bool = False,
                 runtime: str | None = None) -> str:
        """Record a container start that did not end within ``limit`` seconds; returns the stage it was in.

        ``state`` is the runtime's own state of the container when the time ran out (``runc state`` /
        ``ctr tasks ls``: running, created, stopped, paused; None: no container state at all). It decides
        how far the start got; the error is ``timed out after N s`` and what the process was doing.
        """
        state = (state or "").lower() or None
        created = f"{runtime or 'the runtime'} created the container ({state})"
        if state in ("running", "stopped", "paused"):
            for s in ("container_created", "runtime_init", "pivot_root", "capabilities_applied"):
                self._set(s, OK, None, created)
            self._set("process_execd", OK, None, f"the process was {state}")
            if output:
                self._set("output_seen", OK, None, "output before the time ran out")
            else:
                self._set("output_seen", SKIPPED, None, "the process printed nothing")
            stage, why = "exit_status", ("the process was still running" if state != "stopped"
                                         else "the process had exited; its status never reached the kit")
        elif state == "created":
            for s in ("container_created", "runtime_init", "pivot_root", "capabilities_applied"):
                self._set(s, OK, None, created)
            stage, why = "process_execd", "the container was created, its process never started"
        else:
            stage, why = "container_created", "no container state: the runtime never finished creating it"
        msg = f"timed out after {limit:g} s: {why}"
        self._set(stage, TIMED_OUT, seconds, msg)
        self.failed_stage, self.error, self.timed_out = stage, msg, True
        self.signature, self.signatures = None, []
        return stage

    def finish(self) -> Attempt:
        """Mark every stage never recorded as not reached (in stage order)."""
        have = {s["stage"] for s in self.stages}
        for s in STAGES:
            if s not in have:
                self._set(s, NOT_REACHED, None, "")
        order = {s: i for i, s in enumerate(STAGES)}
        self.stages.sort(key=lambda r: order[r["stage"]])
        return self

    def _set(self, stage: str, status: str, seconds: float | None, detail: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        self.stages = [s for s in self.stages if s["stage"] != stage]
        self.stages.append({"stage": stage, "status": status,
                            "seconds": None if seconds is None else round(seconds, 3), "detail": detail})

    # -- reading -------------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        """The container ran and its exit status was collected (whatever that status is)."""
        return self.failed_stage is None and any(s["stage"] == "exit_status" and s["status"] == OK
                                                 for s in self.stages)

    @property
    def reached(self) -> list[str]:
        return [s["stage"] for s in self.stages if s["status"] == OK]

    def seconds(self, start: str, end: str) -> float | None:
        """Sum of stage times from ``start`` to ``end`` inclusive (None if any is missing)."""
        by = {s["stage"]: s["seconds"] for s in self.stages}
        vals = [by.get(s) for s in STAGES[STAGES.index(start):STAGES.index(end) + 1]]
        vals = [v for v in vals if v is not None]
        return round(sum(vals), 3) if vals else None

    def summary(self) -> dict[str, Any]:
        return {"runner": self.runner, "runtime": self.runtime, "via": self.via, "snapshotter": self.snapshotter,
                "image": self.image, "ok": self.ok, "returncode": self.returncode,
                "failed_stage": self.failed_stage, "signature": self.signature,
                "syscall": _syscall_text(self.syscall)}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        labels = stage_labels()
        return pd.DataFrame([{**s, "label": labels[s["stage"]]} for s in self.stages],
                            columns=["stage", "status", "seconds", "detail", "label"])

    def _repr_text(self) -> str:
        where = f"{self.runtime} via {self.via} in {self.runner}"
        if self.ok:
            return f"<Attempt {where}: ran, exit {self.returncode}>"
        if self.timed_out:
            return f"<Attempt {where}: {self.failed_stage} {(self.error or '')[:80]}>"
        return f"<Attempt {where}: {self.failed_stage} failed: {(self.error or '')[:80]}>"

    def _repr_html_(self) -> str:
        sections: list[tuple[str, Any]] = [("stages", self.to_frame())]
        if self.stdout:
            sections.append(("stdout", self.stdout))
        if self.stderr:
            sections.append(("stderr", self.stderr[-3000:]))
        if self.syscall:
            sections.append(("failing syscall", self.syscall))
        if self.cgroups:
            sections.append(("cgroups", self.cgroups))
        return render(f"{self.image} with {self.runtime} via {self.via} in {self.runner}", self.summary(),
                      sections, text=self._repr_text())


_VERSION = re.compile(r"(?:version|Version:)\s*v?(\d+\.\d+\S*)")


def version_of(text: str) -> str | None:
    """The version a ``--version`` output names on its first line (``runc version 1.1.5+ds1``), or for
    ``ctr version`` the daemon's (``Server: … Version: 1.6.20~ds1``, not the client's); None if none."""
    text = text or ""
    part = text.split("Server:", 1)[1] if "Server:" in text else (text.splitlines() or [""])[0]
    m = _VERSION.search(part)
    return m.group(1) if m else None


def _syscall_text(sc: dict[str, Any] | None) -> str | None:
    if not sc:
        return None
    return f"{sc.get('syscall')}({sc.get('args') or ''}) = {sc.get('errno')}"


_NOISE = re.compile(r"^(time=\S+ level=\w+ msg=|ctr: |Error: |error: )")


def _message(text: str, errors_only: bool = False) -> str:
    """The most telling line of a runtime's error output (the last error-looking one, else the last)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errs = [ln for ln in lines if re.search(r"error|fail|invalid|denied|cannot|can't|unable|not found", ln, re.I)]
    line = (errs or ([] if errors_only else lines) or [""])[-1]
    return _NOISE.sub("", line)[:600]


def _classify(text: str) -> list[str]:
    try:
        from ..signatures import classify

        return classify(text).ids
    except Exception:  # the classifier is not the thing under test here
        return []
