"""``probe(runner)`` and its result, :class:`EnvProbe`."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidParameter, SandboxDied, UsageError
from ..report import Rich, render
from ._facts import Fact, facts_from

if TYPE_CHECKING:
    import pandas as pd

    from ..runners.base import Runner

# Keys every probe JSON has at top level (the contract the CLI, notebooks and data/probes rely on).
JSON_KEYS = ("kernel_release", "sandbox", "root_fstype", "root_fsmagic", "proc_sys", "dev_kmsg",
             "capabilities", "cgroup", "runsc_version")


def default_label(data: dict[str, Any]) -> str:
    """The runner's label (``host``, ``gvisor-2022`` …); for records made before runners had labels,
    the runner kind plus the year of its runsc version (only sandboxes have one), or the sandbox kind."""
    runner = data.get("runner") or {}
    if runner.get("label"):
        return runner["label"]
    kind = runner.get("kind") or (data.get("sandbox") or {}).get("kind") or "env"
    m = re.search(r"(20\d\d)\d{4}", data.get("runsc_version") or "")
    return f"{kind}-{m.group(1)}" if m else kind


@dataclass(repr=False)
class EnvProbe(Rich):
    """What one environment offers k3s: ~140 facts from one probe run.

    ``data`` is the full JSON-able record (top-level keys include ``kernel_release``, ``sandbox``,
    ``root_fstype``, ``root_fsmagic``, ``proc_sys``, ``dev_kmsg``, ``capabilities``, ``cgroup``,
    ``runsc_version``). ``facts`` flattens it into ``(fact, value, detail)`` rows; ``probe[fact]``
    returns one value.
    """

    data: dict[str, Any]
    label: str = ""
    _facts: list[Fact] = field(default_factory=list, repr=False, compare=False)

    _title_text = "environment probe"

    def __post_init__(self) -> None:
        missing = [k for k in JSON_KEYS if k not in self.data]
        if missing:
            raise InvalidParameter(f"not a probe record: missing keys {missing}",
                                   hint="pass the dict from EnvProbe.to_dict() or a data/probes/*.json file")
        self.label = self.label or self.data.get("label") or default_label(self.data)
        self.data["label"] = self.label
        self._facts = facts_from(self.data)

    # -- access --------------------------------------------------------------------------------
    @property
    def facts(self) -> list[Fact]:
        return list(self._facts)

    def __getitem__(self, fact: str) -> Any:
        if fact in self:
            return self.get(fact)
        close = [f.fact for f in self._facts if fact.split(".")[0] in f.fact][:8]
        raise KeyError(f"no fact {fact!r}" + (f"; facts in that group: {close}" if close else ""))

    def __contains__(self, fact: object) -> bool:
        return any(f.fact == fact for f in self._facts)

    def get(self, fact: str, default: Any = None) -> Any:
        """The value of ``fact``, or ``default`` when this probe has no such fact."""
        for f in self._facts:
            if f.fact == fact:
                return f.value
        return default

    def __len__(self) -> int:
        return len(self._facts)

    @property
    def kind(self) -> str:
        """The sandbox the probe detected from inside: ``gvisor``, ``container``, ``vm``, ``bare-metal``."""
        return (self.data.get("sandbox") or {}).get("kind", "?")

    @property
    def in_gvisor(self) -> bool:
        """The probe ran inside gVisor (detected from inside: uname -v, the gofer's 9p root)."""
        return self.kind == "gvisor"  # not-a-runner-branch: the sandbox the probe detected (data)

    def proc_sys(self, key: str) -> dict[str, Any]:
        """The record of one /proc/sys key (``present``, ``writable``, ``value``, ...)."""
        try:
            return dict(self.data["proc_sys"][key])
        except KeyError:
            raise InvalidParameter(f"key {key!r} was not probed",
                                   hint="see k3snb.probing.procsys_keys() for the probed keys") from None

    def missing_proc_sys(self) -> list[str]:
        return [k for k, v in self.data["proc_sys"].items() if not v.get("present")]

    # -- the four faces ------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        ps = self.data["proc_sys"]
        return {
            "label": self.label,
            "sandbox": self.kind,
            "kernel": self.data.get("kernel_release"),
            "rootfs": f"{self.data.get('root_fstype')} ({self.data.get('root_fsmagic')})",
            "runsc": self.data.get("runsc_version") or "-",
            "proc_sys": f"{sum(1 for v in ps.values() if v.get('present'))}/{len(ps)} keys present",
            "facts": len(self._facts),
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per fact: ``fact``, ``value``, ``detail``."""
        import pandas as pd

        return pd.DataFrame(self._facts, columns=["fact", "value", "detail"])

    def to_dict(self) -> dict[str, Any]:
        """The full record (JSON types only); ``EnvProbe(d)`` / :meth:`load` read it back."""
        return json.loads(json.dumps(self.data, default=str))

    def to_json(self, path: str | os.PathLike | None = None, indent: int = 1) -> str:
        """Return the record as JSON text; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, sort_keys=False)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def load(cls, path: str | os.PathLike, label: str | None = None) -> EnvProbe:
        """Read a probe JSON written by :meth:`to_json` (e.g. ``data/probes/host.json``)."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise InvalidParameter(f"no probe file {str(p)!r}",
                                   hint="record one with `k3snb probe --json > FILE` or EnvProbe.to_json(FILE)"
                                   ) from None
        except ValueError as e:
            raise InvalidParameter(f"{str(p)!r} is not JSON: {e}") from None
        return cls(data, label or "")

    def _repr_text(self) -> str:
        s = self.summary()
        return (f"<EnvProbe {s['label']}: {s['sandbox']}, kernel {s['kernel']}, root {s['rootfs']}, "
                f"{s['proc_sys']}, {s['facts']} facts>")

    def _repr_html_(self) -> str:
        df = self.to_frame()
        groups = df["fact"].str.split(".").str[0]
        sections = [("evidence", "\n".join(self.data["sandbox"].get("evidence", [])))]
        for g in dict.fromkeys(groups):
            sections.append((g, df[groups == g].reset_index(drop=True)))
        return render(f"environment probe: {self.label}", self.summary(), sections, text=self._repr_text())


def probe(
    runner: Runner | str | None = None,
    *,
    label: str | None = None,
    timeout: float = 180.0,
    write_back: bool | None = None,
    retries: int = 1,
    **runner_options: Any,
) -> EnvProbe:
    """Probe an environment and return an :class:`EnvProbe` (at least 40 facts).

    The collector (:func:`k3snb.probing._collect.collect`) runs *inside* the runner through
    ``run_python``, so the same code probes the host and a sandbox. Probing changes nothing
    outside the runner: on the host /proc/sys is never written, mounts happen in a private mount
    namespace and iptables is listed in a private network namespace.

    Args:
        runner: a :class:`~k3snb.runners.Runner` (used as is, started if needed, not closed),
            or a runner spec ("host", "gvisor", "gvisor:2024:ptrace" …, see :mod:`k3snb.runners`;
            created with ``runner_options`` and closed after), or None for "host".
        label: name shown in tables and diffs; default ``host`` / ``gvisor-2022`` / ``gvisor-2024``.
        timeout: seconds for the whole collection.
        write_back: test /proc/sys writability by writing the value just read back. Default: only
            where the runner has its own kernel (gVisor; the collector refuses it anywhere else);
            elsewhere ``open(O_WRONLY)`` decides.
        retries: for a runner created here, how often to retry with a fresh sandbox if it dies.
        **runner_options: passed to the runner when ``runner`` is a spec, e.g. ``runsc="2024"``;
            options of another kind of runner are recorded as ignored (``data["runner"]``).

    Raises:
        InvalidParameter: unknown runner name or options, wrong argument types.
        SandboxDied: the sandbox died during the probe (after ``retries`` fresh attempts).
    """
    from ..runners import Runner, resolve
    from ._collect import collect
    from ._procsys_keys import procsys_keys

    if runner is not None and not isinstance(runner, Runner | str | os.PathLike):
        raise InvalidParameter(f"runner must be a Runner, a runner spec or None, got {type(runner).__name__}",
                               hint="pass runner='host', runner='gvisor:2024' or a Runner such as GVisor(runsc='2024')")
    if isinstance(runner, Runner):
        resolve(runner, **runner_options)  # options next to a Runner object: one clear error
    if label is not None and (not isinstance(label, str) or not label):
        raise InvalidParameter(f"label must be a non-empty string, got {label!r}")
    keys = [k["key"] for k in procsys_keys()]
    attempts = 0
    while True:
        attempts += 1
        own = not isinstance(runner, Runner)
        r = resolve(runner, **runner_options) if own else runner
        try:
            r.start()  # idempotent by the Runner contract
            wb = r.capabilities.own_kernel if write_back is None else bool(write_back)
            data = r.run_python(collect, keys, write_back=wb, timeout=timeout)
            info = r.info()
            break
        except SandboxDied:
            if not own or attempts > retries:
                raise
        finally:
            if own:
                r.close()
    data["runner"] = info
    data["runsc_version"] = info.get("runsc_version")
    data["probed_at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    data["probe_attempts"] = attempts
    from .. import __version__

    data["kit_version"] = __version__
    return EnvProbe(data, label or "")


def as_probe(x: EnvProbe | dict | str | os.PathLike) -> EnvProbe:
    """Accept an EnvProbe, a probe dict or a path to a probe JSON."""
    if isinstance(x, EnvProbe):
        return x
    if isinstance(x, dict):
        return EnvProbe(dict(x))
    if isinstance(x, str | os.PathLike):
        return EnvProbe.load(x)
    raise UsageError(f"expected an EnvProbe, a probe dict or a JSON path, got {type(x).__name__}",
                     hint="pass the result of k3snb.probe(...)")


def probe_environments(
    runners: list[str] | tuple[str, ...] = ("host", "gvisor"),
    builds: list[str] | tuple[str, ...] = ("2022", "2024"),
) -> tuple[dict[str, EnvProbe], dict[str, str]]:
    """Probe each runner spec (and each runsc build for a spec that takes one but names none); what
    cannot run here is skipped.

    Returns:
        ``(probes, skipped)``: probes by label (``host``, ``gvisor-2022`` …) and, for each
        environment that could not be probed (runsc build missing, not root, sandbox died), the
        reason.

    Raises:
        InvalidParameter: an unknown runner name or runsc version (a typo, not a missing build).
    """
    from ..errors import MissingDependency, NotRoot, SandboxError

    if isinstance(runners, str) or isinstance(builds, str):
        raise InvalidParameter("runners and builds must be lists, e.g. ['host', 'gvisor'] and ['2022', '2024']",
                               hint="write runners = ['host'] rather than runners = 'host'")
    from ..runners import expand_spec, spec_label

    plan: list[tuple[str, str, dict[str, Any]]] = []
    for spec in runners:
        for one in expand_spec(spec, builds):  # "gvisor" -> one spec per runsc build
            label = spec_label(one)
            if label not in [p[0] for p in plan]:
                plan.append((label, one, {}))
    probes: dict[str, EnvProbe] = {}
    skipped: dict[str, str] = {}
    for label, name, opts in plan:
        try:
            probes[label] = probe(name, label=label, **opts)
        except (MissingDependency, NotRoot, SandboxError) as e:
            skipped[label] = str(e).splitlines()[0]
    return probes, skipped
