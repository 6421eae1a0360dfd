"""Run folders read back: one :class:`RunData` per ``runs/<timestamp>/`` written by ``run_experiments``,
and :func:`list_runs`, the collection of past runs.

Everything here only reads files (``run.json``, ``summary.json``, ``<unit>/results.json``); a run that
was interrupted or written by an older kit still reads, with the missing facts shown as unknown.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ._html import Table

VERDICTS = ("reproduced", "refuted", "not-testable", "inconclusive")
# an environment key: host, gvisor-2022, gvisor-2024, optionally /platform (gvisor-2024/ptrace)
_ENV_RE = re.compile(r"^(host|gvisor-(?:20\d\d|custom))(/[a-z0-9_-]+)?$")
_ENV_PREFIX = re.compile(r"^(host|gvisor-20\d\d(?:/[a-z0-9_-]+)?)[.:]")


def git_facts(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"git_commit", "git_dirty"}`` of the kit's checkout (None/None when not run from a git checkout)."""
    src = Path(path) if path is not None else Path(__file__).resolve().parents[2]
    if not (src / ".git").exists():
        return {"git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        # tracked changes only: run folders and caches inside the checkout are not "dirty"
        status = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit or None, "git_dirty": bool(status.strip()) if commit else None}


def env_label(key: str) -> str:
    """Display name of an environment key: ``gvisor-2024/ptrace`` → ``gVisor 2024 · ptrace``."""
    base, _, platform = key.partition("/")
    return base.replace("gvisor-", "gVisor ") + (f" · {platform}" if platform else "")


def env_sort_key(key: str) -> tuple:
    """Column order: the host first, then sandbox builds in order, each build's platforms together."""
    base, _, platform = key.partition("/")
    return (base.startswith("gvisor"), base, platform)


def _build_of(runsc: Any) -> str:
    if runsc in (None, "", "2022"):
        return "2022"
    s = str(runsc)
    if s == "2024" or "20240729" in s:
        return "2024"
    if "20221219" in s:
        return "2022"
    m = re.search(r"(20\d\d)\d{4}", s)
    return m.group(1) if m else "custom"


def env_key(spec: str, runsc: Any = None, platform: Any = None) -> str:
    """``host`` or ``gvisor-<build>[/platform]`` for a runner spec (``gvisor:2024:ptrace``); the spec's own
    build and platform win over ``runsc``/``platform`` (a path or version string is reduced to its build)."""
    from ..runners import REGISTRY, parse_spec, spec_label

    try:
        name, opts = parse_spec(str(spec))
    except Exception:  # a runner kind this kit no longer knows: name it as given
        return str(spec)
    fields = REGISTRY[name].SPEC_FIELDS
    if "runsc" not in fields:
        return spec_label(name)
    build = _build_of(opts.get("runsc") or runsc)
    label = spec_label(name, runsc=build) if build != "custom" else f"{name}-custom"
    platform = opts.get("platform") or platform
    return label + (f"/{platform}" if "platform" in fields and platform and platform != "systrap" else "")


@dataclass
class Unit:
    """One executed (or skipped) experiment of a run: a row of summary.json plus its results.json."""

    name: str
    experiment: str
    runner: str | None
    status: str
    reason: str
    duration_s: float | None
    parameters: dict[str, Any]
    folder: Path
    notebook: Path | None
    results: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    claims: list[str] = field(default_factory=list)

    row: dict[str, Any] = field(default_factory=dict)

    @property
    def env(self) -> str:
        """The environment this unit ran in: ``host`` or ``gvisor-<build>[/platform]``.

        From the summary row's axes (runner spec ``gvisor:2024:ptrace``, runsc, platform) and the
        injected parameters, whichever say it.
        """
        used = {(u.get("kind"), u.get("runsc_version") or u.get("runsc"), u.get("platform"))
                for u in self.results.get("runners_used") or [] if isinstance(u, dict) and u.get("kind")}
        if len(used) == 1:  # the notebook started exactly one kind of runner: that is where it ran
            kind, runsc, platform = used.pop()
            return env_key(kind, runsc, platform)
        spec = str(self.runner or self.parameters.get("runner") or "gvisor")
        return env_key(spec,
                       self.row.get("runsc_version") or self.row.get("runsc") or self.parameters.get("runsc"),
                       self.row.get("platform_used") or self.row.get("platform") or self.parameters.get("platform"))

    @property
    def verdicts(self) -> list[dict[str, Any]]:
        return [v for v in self.results.get("verdicts", []) if isinstance(v, dict) and v.get("claim")]

    @property
    def records(self) -> dict[str, Any]:
        return self.results.get("records", {}) or {}

    def verdict_envs(self, v: dict[str, Any]) -> list[str]:
        """Environments a verdict speaks for: its own ``environments`` field, else the environment
        prefixes of its evidence keys (``gvisor-2022.root_fstype``), else the unit's environment."""
        explicit = v.get("environments") or v.get("environment")
        if isinstance(explicit, str):
            explicit = [explicit]
        if explicit:
            keys = [str(e) if _ENV_RE.match(str(e)) else env_key(str(e)) for e in explicit]
            keys = [k for k in keys if _ENV_RE.match(k)]
            if keys:
                return sorted(set(keys), key=env_sort_key)
        prefixes = [_ENV_PREFIX.match(k) for k in (v.get("evidence") or {})]
        if prefixes and all(prefixes):
            return sorted({m.group(1) for m in prefixes}, key=env_sort_key)
        return [self.env]


@dataclass
class RunData:
    """A run folder read back: facts from run.json and summary.json, one :class:`Unit` per experiment."""

    path: Path
    run: dict[str, Any]
    summary: dict[str, Any]
    units: list[Unit]

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def environment(self) -> dict[str, Any]:
        return self.run.get("environment") or {}

    @property
    def kit(self) -> dict[str, Any]:
        return self.summary.get("kit") or {}

    @property
    def date(self) -> str:
        return str(self.environment.get("date") or self.kit.get("started") or "")

    def counts(self) -> dict[str, int]:
        out = {s: sum(1 for u in self.units if u.status == s) for s in ("passed", "failed", "skipped")}
        for s in VERDICTS:
            out[s] = sum(1 for u in self.units for v in u.verdicts if v.get("status") == s)
        return out

    def facts(self) -> dict[str, Any]:
        """Environment facts shown per run: date, kernel, runsc builds, kit version, git commit, dirty flag."""
        env = self.environment
        runsc = env.get("runsc")
        if isinstance(runsc, dict):
            runsc = ", ".join(f"{k}: {v}" for k, v in sorted(runsc.items())) or "none"
        return {
            "date": self.date or "unknown",
            "kernel": env.get("kernel", "unknown"),
            "python": env.get("python", "unknown"),
            "runsc builds": runsc if runsc is not None else "unknown",
            "k3s": env.get("k3s") or "none",
            "kit version": env.get("kit_version") or self.kit.get("version") or "unknown",
            "git commit": self.kit.get("git_commit") or "unknown",
            "dirty": {True: "yes", False: "no"}.get(self.kit.get("git_dirty"), "unknown"),
            "interrupted": "yes" if self.summary.get("interrupted") else "no",
        }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def is_run(path: Path) -> bool:
    return path.is_dir() and ((path / "summary.json").is_file() or (path / "run.json").is_file())


def _registry_info(path: str | None = None) -> dict[str, dict[str, Any]]:
    """Title and claims per experiment id, from the run's registry (run.json ``registry``) or the packaged one."""
    try:
        from ..experiments._registry import load_registry

        return {e.id: {"title": e.title, "claims": list(e.claims)} for e in load_registry(path).entries}
    except Exception:  # a report must still render when the registry is unreadable
        return {}


def read_run(path: str | os.PathLike) -> RunData:
    """Read one run folder.

    Raises:
        UsageError: ``path`` is not a run folder (no run.json / summary.json).
    """
    p = Path(path).absolute()
    if not is_run(p):
        raise UsageError(f"{path} is not a run folder (no summary.json or run.json)",
                         hint="pass a folder written by `k3snb run`; `k3snb runs` lists them")
    run = _read_json(p / "run.json")
    summary = _read_json(p / "summary.json")
    registry = _registry_info(run.get("registry"))
    planned = {e.get("id"): e for e in run.get("cells") or run.get("experiments") or [] if isinstance(e, dict)}
    rows = summary.get("rows") or [{"id": k, "runner": e.get("runner"), "status": "skipped" if e.get("skip") else "failed",
                                    "reason": e.get("skip") or "no summary row (run killed?)"}
                                   for k, e in planned.items()]
    units = []
    for r in rows:
        name = str(r.get("id"))
        folder = p / name
        res = _read_json(folder / "results.json")
        exp = r.get("experiment") or res.get("experiment") or _experiment_of(name, r.get("runner"))
        nb = next(iter(sorted(folder.glob("*.ipynb"))), None) if folder.is_dir() else None
        info = {**registry.get(exp, {}), **{k: (planned.get(name) or {})[k] for k in ("title", "claims")
                                             if (planned.get(name) or {}).get(k)}}
        params = res.get("parameters") or (planned.get(name) or {}).get("parameters") or {}
        if "runsc" not in params and (runsc := _argv_runsc(run.get("argv") or [])):
            params = {**params, "runsc": runsc}
        units.append(Unit(
            name=name, experiment=exp, runner=r.get("runner") or res.get("runner"), status=r.get("status", "failed"),
            reason=r.get("reason") or "", duration_s=r.get("duration_s"), parameters=params, folder=folder,
            notebook=nb, results=res, title=info.get("title", ""),
            claims=list(res.get("claims") or info.get("claims") or []), row=r,
        ))
    return RunData(p, run, summary, units)


def _experiment_of(name: str, runner: str | None) -> str:
    return name[: -len(runner) - 1] if runner and name.endswith(f"-{runner}") else name


def _argv_runsc(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--runsc" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--runsc="):
            return a.split("=", 1)[1]
    return None


def runs_base(base: str | os.PathLike | None = None) -> Path:
    """Where runs live: ``base``, else ``$K3SNB_RUNS``, else ``./runs`` (as ``k3snb run`` does)."""
    return Path(base if base is not None else os.environ.get("K3SNB_RUNS", "runs")).absolute()


def resolve_run(ref: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """A run folder from a path, a folder name under the runs base, or ``latest``.

    Raises:
        UsageError: nothing matches (the hint lists where it looked).
    """
    p = Path(ref)
    if is_run(p):
        return p.absolute()
    b = runs_base(base)
    if str(ref) in ("latest", "last"):
        found = sorted((d for d in b.iterdir() if is_run(d)), key=lambda d: d.name) if b.is_dir() else []
        if found:
            return found[-1]
    elif is_run(b / str(ref)):
        return b / str(ref)
    raise UsageError(f"no run folder {str(ref)!r} (looked at it as a path and under {b})",
                     hint="pass a folder written by `k3snb run`; `k3snb runs` lists them")


class RunList(Table):
    """Past runs, oldest first: one row each with date, git commit, counts and folder."""

    _key = "run"
    _section = "runs"
    _title_text = "runs"
    _columns = ("run", "date", "commit", "passed", "failed", "skipped", *VERDICTS, "folder", "report")

    def table(self) -> str:
        if not self.rows:
            return "no runs"
        head = f"{'run':22} {'date':20} {'commit':10} {'pass':>4} {'fail':>4} {'skip':>4}  verdicts  folder"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            v = "/".join(str(r[k]) for k in VERDICTS)
            lines.append(f"{r['run'][:22]:22} {r['date'][:19]:20} {r['commit'][:10]:10} {r['passed']:>4} "
                         f"{r['failed']:>4} {r['skipped']:>4}  {v:8}  {r['folder']}")
        lines.append("verdicts: reproduced/refuted/not-testable/inconclusive")
        return "\n".join(lines)


def list_runs(base: str | os.PathLike | None = None) -> RunList:
    """Past runs under ``base`` (default ``$K3SNB_RUNS`` or ``./runs``), oldest first.

    A folder that is not a run is ignored; an empty base, or a missing default one, gives an empty list.

    Raises:
        UsageError: ``base`` was given and is no folder (a typo must not read as "no runs").
    """
    b = runs_base(base)
    if base is not None and not b.is_dir():
        what = "is not a folder" if b.exists() else "does not exist"
        raise UsageError(f"runs folder {b} {what}",
                         hint="pass the folder holding the run folders (`k3snb run` writes them under ./runs "
                              "or $K3SNB_RUNS)")
    rows = []
    for d in sorted(b.iterdir(), key=lambda d: d.name) if b.is_dir() else []:
        if not is_run(d):
            continue
        r = read_run(d)
        kit = r.kit
        commit = (kit.get("git_commit") or "unknown")[:10] + ("+dirty" if kit.get("git_dirty") else "")
        report = d / "report.html"
        rows.append({"run": d.name, "date": r.date or "unknown", "commit": commit, **r.counts(),
                     "folder": str(d), "report": str(report) if report.is_file() else ""})
    return RunList(rows)
