"""Launch profiles (data files in ``k3snb/data/profiles/*.yaml``) and k3s flag validation.

A profile names the workarounds to apply (in order) and extra k3s flags. Everything is validated
before anything starts: unknown profile, unknown workaround, malformed or unknown flag → one
``UsageError`` naming the valid choices.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from ..errors import InvalidParameter, UsageError
from ..report import Rich, Table, render

STAGES = ("process", "kubeconfig", "readyz", "node-registered", "node-ready")



@cache
def k3s_flags() -> dict[str, Any]:
    """The k3s flag catalogue (``k3snb/data/k3s-flags.yaml``): ``server``/``agent`` name sets, the
    single-letter ``short`` aliases, the k3s version they came from and the ``later`` additions."""
    import yaml

    d = yaml.safe_load(resources.files("k3snb").joinpath("data/k3s-flags.yaml").read_text())
    later = d.get("later") or {}
    out: dict[str, Any] = {"k3s_version": d["k3s_version"], "source": d["source"], "short": d.get("short") or {}}
    for cmd in ("server", "agent"):
        out[cmd] = frozenset(d[cmd]) | {n for n, v in later.items() if cmd in v.get("commands", ())}
    return out


# flags the launcher itself sets: a profile/extra flag must not override them silently
RESERVED = frozenset({"data-dir", "write-kubeconfig", "log"})


@dataclass(frozen=True, repr=False)
class Profile(Rich):
    name: str
    title: str
    workarounds: tuple[str, ...]
    flags: tuple[str, ...]
    agent: bool = True
    experiment: str | None = None
    target_stage: str = "readyz"
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    _title_text = "k3s profile"

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "agent": self.agent, "experiment": self.experiment,
                "workarounds": len(self.workarounds), "target_stage": self.target_stage}

    def to_frame(self):
        import pandas as pd

        from ..workarounds import get_workaround

        rows = []
        for wid in self.workarounds:
            w = get_workaround(wid)
            rows.append({"workaround": wid, "kind": w.kind, "research": ", ".join(w.research),
                         "flags": " ".join(w.flags())})
        rows += [{"workaround": "(profile flag)", "kind": "flag", "research": "", "flags": f} for f in self.flags]
        return pd.DataFrame(rows)

    def all_flags(self) -> list[str]:
        from ..workarounds import get_workaround

        out: list[str] = []
        for wid in self.workarounds:
            out += [f for f in get_workaround(wid).flags() if f not in out]
        return out + [f for f in self.flags if f not in out]

    def _repr_html_(self) -> str:
        return render(f"profile {self.name}: {self.title}", self.summary(),
                      [("description", self.description), ("workarounds and flags", self.to_frame())],
                      text=self._repr_text())


class UnknownProfile(UsageError):
    pass


@cache
def _load() -> dict[str, Profile]:
    import yaml

    out = {}
    for f in sorted(resources.files("k3snb").joinpath("data/profiles").iterdir()):
        if not f.name.endswith(".yaml"):
            continue
        d = yaml.safe_load(f.read_text())
        out[d["name"]] = Profile(
            name=d["name"], title=d.get("title", ""), workarounds=tuple(d.get("workarounds") or ()),
            flags=tuple(d.get("flags") or ()), agent=bool(d.get("agent", True)),
            experiment=None if d.get("experiment") is None else str(d["experiment"]),
            target_stage=d.get("target_stage", "readyz"), description=(d.get("description") or "").strip(), raw=d,
        )
    return out


def profile_names() -> list[str]:
    return sorted(_load())


def get_profile(name: str | Profile) -> Profile:
    if isinstance(name, Profile):
        return name
    p = _load().get(name)
    if p is None:
        close = difflib.get_close_matches(str(name), profile_names(), n=1)
        raise UnknownProfile(
            f"unknown profile {name!r}; valid: {', '.join(profile_names())}",
            hint=(f"did you mean {close[0]!r}? " if close else "") + "list them with k3snb.list_profiles()",
        )
    return p


class ProfileTable(Table):
    _title_text = "k3s launch profiles"
    _key = "name"
    _section = "profiles"


def list_profiles() -> ProfileTable:
    """All launch profiles as a table (name, experiment, agent, workarounds, target stage)."""
    rows = [{"name": p.name, "title": p.title, "experiment": p.experiment, "agent": p.agent,
             "workarounds": ", ".join(p.workarounds), "flags": " ".join(p.flags), "target_stage": p.target_stage}
            for p in _load().values()]
    return ProfileTable(rows)


def flag_name(flag: str) -> str:
    return flag[2:].split("=", 1)[0]


def validate_flags(flags: list[str] | tuple[str, ...], *, strict: bool = True) -> list[str]:
    """Check spelling of k3s server flags; returns them unchanged. Raises InvalidParameter."""
    if isinstance(flags, str):
        raise InvalidParameter(f"extra_flags must be a list of flags, got the string {flags!r}",
                               hint='pass e.g. extra_flags=["--disable-agent"]')
    for f in flags:
        if not isinstance(f, str) or not f.startswith("--") or len(f) < 3:
            raise InvalidParameter(f"not a k3s flag: {f!r}", hint="write long flags as '--name' or '--name=value'")
        name = flag_name(f)
        if name in RESERVED:
            raise InvalidParameter(f"--{name} is set by the launcher", hint=f"pass {name.replace('-', '_')}= to launch_k3s "
                                   "instead (data_dir=...), or read cluster.kubeconfig / cluster.log_path")
        if name.endswith("-arg") and "=" not in f:
            raise InvalidParameter(f"{f!r} needs a value", hint=f"e.g. --{name}=--fail-swap-on=false")
        known = k3s_flags()["server"]
        if strict and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            raise InvalidParameter(
                f"unknown k3s server flag --{name}" + (f"; did you mean {', '.join('--' + c for c in close)}?" if close else ""),
                hint="check `k3s server --help` (the kit's list: k3snb/data/k3s-flags.yaml); "
                     "pass strict_flags=False (CLI: --no-strict-flags) to bypass",
            )
    return list(flags)


def validate_stage(stage: str) -> str:
    if stage not in STAGES:
        raise InvalidParameter(f"unknown readiness stage {stage!r}; valid: {', '.join(STAGES)}",
                               hint="stages in order: " + " → ".join(STAGES))
    return stage
