"""Declarative workaround classes: metadata in ``k3snb/data/workarounds.yaml``, behaviour here.

A workaround either *acts in a runner* (``kind: runner`` — mounts, fake files, PATH shims) or only
*contributes k3s flags* (``kind: flag``). Both contribute to a :class:`LaunchPlan`, which
:func:`k3snb.launch_k3s` turns into the final command line (flags, env, PATH, wrappers).
Everything happens inside the runner (its private mount namespace or the gVisor sandbox); no
workaround touches the host's own mount table, /dev or iptables binaries. (Only an agent launched in
the Host runner, which shares the host's network namespace, could change the host's network tables;
``launch_k3s`` refuses that unless called with ``host=True``.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InvalidParameter, UsageError, WorkaroundFailed
from ..report import Rich, render

if TYPE_CHECKING:
    from ..runners.base import Runner


@cache
def metadata() -> dict[str, dict[str, Any]]:
    import yaml

    text = resources.files("k3snb").joinpath("data/workarounds.yaml").read_text()
    doc = yaml.safe_load(text)
    return {w["id"]: w for w in doc["workarounds"]}


@cache
def research_only() -> dict[str, str]:
    """Research workarounds (W ids) deliberately not implemented as actions, with the reason."""
    import yaml

    doc = yaml.safe_load(resources.files("k3snb").joinpath("data/workarounds.yaml").read_text())
    return {str(k): v for k, v in (doc.get("research_only") or {}).items()}


@dataclass
class LaunchPlan:
    """What the applied workarounds contribute to the k3s command line."""

    data_dir: str
    work_dir: str
    flags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    path_prepend: list[str] = field(default_factory=list)
    wrappers: list[list[str]] = field(default_factory=list)

    def add_flags(self, flags: list[str]) -> None:
        for f in flags:
            if f not in self.flags:
                self.flags.append(f)

    def command(self, argv: list[str]) -> list[str]:
        """Wrap ``argv``: later wrappers end up outermost (applied in workaround order)."""
        out = list(argv)
        for w in self.wrappers:
            out = [*w, *out]
        return out

    def environment(self, base_path: str | None = None) -> dict[str, str]:
        env = dict(self.env)
        path = base_path or os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        if self.path_prepend:
            path = ":".join([*self.path_prepend, path])
        env["PATH"] = path
        return env


@dataclass(repr=False)
class WorkaroundResult(Rich):
    """Outcome of one apply/verify/revert (action names: apply, verify, revert)."""

    id: str
    action: str
    ok: bool
    runner: str = ""
    duration: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    _title_text = "workaround"

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "ok": self.ok, "runner": self.runner,
                "duration_s": round(self.duration, 3)}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{**self.summary(), "detail": _short(self.detail)}])

    def _repr_html_(self) -> str:
        return render(f"{self.action} {self.id}", self.summary(), [("detail", {k: _short(v) for k, v in self.detail.items()})],
                      text=self._repr_text())

    def __bool__(self) -> bool:
        return self.ok


def _short(v: Any, n: int = 300) -> str:
    s = str(v)
    return s if len(s) <= n else s[: n - 1] + "…"


class Workaround:
    """Base class. Subclasses set ``id`` (matching the YAML) and ``params`` (defaults)."""

    id: ClassVar[str] = ""
    params: ClassVar[dict[str, Any]] = {}
    registry: ClassVar[dict[str, type[Workaround]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.id:
            Workaround.registry[cls.id] = cls

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.params)
        if unknown:
            raise InvalidParameter(
                f"workaround {self.id!r} has no parameter(s) {sorted(unknown)}; valid: {sorted(self.params) or 'none'}",
                hint=f"see k3snb.get_workaround({self.id!r}).params",
            )
        self.options: dict[str, Any] = {**self.params, **params}
        self.state: dict[str, Any] | None = None  # what apply() did, for revert()
        self.plan: LaunchPlan | None = None

    # -- metadata ---------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        return metadata()[self.id]

    @property
    def title(self) -> str:
        return self.meta["title"]

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def research(self) -> list[str]:
        return list(self.meta.get("research", []))

    @property
    def fixes(self) -> list[str]:
        return list(self.meta.get("signatures", []))

    @property
    def description(self) -> str:
        return self.meta.get("description", "").strip()

    @property
    def applied(self) -> bool:
        return self.state is not None

    def flags(self) -> list[str]:
        """k3s flags this workaround contributes (flag-only ones take them from the YAML)."""
        return list(self.meta.get("flags", []))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"<Workaround {self.id} ({self.kind}) {self.title!r}{' ' + opts if opts else ''}>"

    def _repr_html_(self) -> str:
        return render(
            f"workaround {self.id}: {self.title}",
            {"kind": self.kind, "research": ", ".join(self.research), "fixes": ", ".join(self.fixes),
             "applied": self.applied},
            [("description", self.description), ("flags", "\n".join(self.flags()) or "(none)"),
             ("parameters", {k: repr(v) for k, v in self.options.items()} or "(none)")],
            text=repr(self),
        )

    # -- behaviour --------------------------------------------------------------------------
    def apply(self, runner: Runner, plan: LaunchPlan | None = None) -> WorkaroundResult:
        """Act in the runner (if needed) and add flags/env/wrappers to ``plan``. Raises WorkaroundFailed."""
        plan = plan or _default_plan(runner)
        t0 = time.monotonic()
        detail = self._apply(runner, plan)
        plan.add_flags(self.flags())
        self.plan = plan
        self.state = detail
        return WorkaroundResult(self.id, "apply", True, runner.kind, time.monotonic() - t0, detail)

    def verify(self, runner: Runner) -> WorkaroundResult:
        """Whether the workaround is in effect in the runner; never raises for 'not in effect'
        (``check`` is reserved for results: ``RunResult.check()`` raises when the command failed)."""
        t0 = time.monotonic()
        ok, detail = self._check(runner)
        return WorkaroundResult(self.id, "verify", ok, runner.kind, time.monotonic() - t0, detail)

    def revert(self, runner: Runner) -> WorkaroundResult:
        """Undo apply(); a no-op (ok) when nothing was applied."""
        t0 = time.monotonic()
        if self.state is None:
            return WorkaroundResult(self.id, "revert", True, runner.kind, 0.0, {"note": "not applied"})
        detail = self._revert(runner, self.state) or {}
        ok = detail.get("ok", True)
        if self.plan is not None:
            for f in self.flags():
                if f in self.plan.flags:
                    self.plan.flags.remove(f)
        self.state = None
        return WorkaroundResult(self.id, "revert", ok, runner.kind, time.monotonic() - t0, detail)

    # subclass hooks
    def _apply(self, runner: Runner, plan: LaunchPlan) -> dict[str, Any]:
        return {"flags": self.flags()}

    def _check(self, runner: Runner) -> tuple[bool, dict[str, Any]]:
        if self.plan is None:
            return False, {"note": "flag-only workaround: not applied to a launch plan"}
        missing = [f for f in self.flags() if f not in self.plan.flags]
        return not missing, {"flags": self.flags(), "missing": missing}

    def _revert(self, runner: Runner, state: dict[str, Any]) -> dict[str, Any] | None:
        return {"ok": True}

    # helpers --------------------------------------------------------------------------------
    def _call(self, runner: Runner, func: Callable[..., Any], *args: Any, timeout: float = 60, **kw: Any) -> Any:
        return runner.run_python(func, *args, timeout=timeout, **kw)

    def _fail(self, msg: str, detail: dict[str, Any], hint: str | None = None) -> WorkaroundFailed:
        return WorkaroundFailed(f"{self.id}: {msg}", hint=hint, workaround=self.id, detail=_short(detail, 600))


def _default_plan(runner: Runner) -> LaunchPlan:
    wd = Path(runner.workdir) / "k3snb-workarounds"
    wd.mkdir(parents=True, exist_ok=True)
    return LaunchPlan(data_dir=str(Path(runner.workdir) / "k3s-data"), work_dir=str(wd))


def get_workaround(id: str, **params: Any) -> Workaround:
    """Return a fresh workaround object by id (``"kmsg"``) or research id (``"W1"``)."""
    _load_all()
    cls = Workaround.registry.get(id)
    if cls is None:
        by_w = [w for w, m in metadata().items() if id.upper() in [r.upper() for r in m.get("research", [])]]
        if len(by_w) == 1:
            cls = Workaround.registry[by_w[0]]
    if cls is None:
        valid = sorted(Workaround.registry)
        extra = f" ({id} is research-only: {research_only()[id]})" if id in research_only() else ""
        raise UnknownWorkaround(
            f"unknown workaround {id!r}{extra}; valid: {', '.join(valid)}",
            hint="list them with k3snb.list_workarounds(); research ids like 'W1' are accepted too",
        )
    return cls(**params)


class UnknownWorkaround(UsageError):
    pass


def _load_all() -> None:
    from . import cgroups, cni_plugins, fake_procsys, flags, iptables, kmsg, mounts, userns  # noqa: F401

    missing = set(metadata()) - set(Workaround.registry)
    if missing:  # a YAML entry of kind flag needs no class of its own
        for wid in missing:
            if metadata()[wid]["kind"] == "flag":
                type(f"Flag_{wid.replace('-', '_')}", (flags.FlagWorkaround,), {"id": wid})
