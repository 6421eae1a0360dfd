"""The experiment registry: ``k3snb/data/experiments.yaml`` loaded into :class:`Experiment` records.

Requirements are checked here with the same capability flags the tests skip on, so a run and the
test suite agree on what "missing" means.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter, K3snbError, NotRoot, RunscMissing, UsageError
from ..report import Table

CAPABILITIES = ("root", "runsc", "runsc2024", "k3s")
KNOWN_RUNNERS = ("gvisor", "host")
_KEYS = {"id", "notebook", "title", "claims", "requires", "programs", "runners", "parameters", "timeout", "slow"}


@dataclass(frozen=True)
class Experiment:
    """One registry entry. ``path`` is the notebook file (it may not exist yet)."""

    id: str
    notebook: str
    title: str
    path: Path
    claims: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    runners: tuple[str, ...] = ("gvisor",)
    parameters: dict[str, Any] = field(default_factory=dict)
    timeout: float = 1800.0
    slow: bool = False

    def missing(self, runsc: str | os.PathLike | None = None) -> list[str]:
        """Reasons this experiment cannot run here (empty when it can)."""
        reasons = []
        for cap in self.requires:
            if not _has(cap, None if runsc is None else str(runsc)):
                reasons.append(_MISSING_TEXT[cap] if cap != "runsc" or runsc is None else f"runsc {runsc} missing")
        reasons += [f"program {p!r} not on PATH" for p in self.programs if shutil.which(p) is None]
        if not self.path.is_file():
            reasons.append(f"notebook {self.notebook} not written yet")
        return reasons

    def check_explicit(self, runsc: str | os.PathLike | None = None) -> None:
        """Raise the usage error for a requirement the user cannot get round by skipping (root, runsc)."""
        if "root" in self.requires and not _has("root", None):
            raise NotRoot(f"experiment {self.id} needs root")
        for cap in ("runsc", "runsc2024"):
            if cap in self.requires and not _has(cap, None if runsc is None else str(runsc)):
                raise RunscMissing(f"experiment {self.id} needs {_MISSING_TEXT[cap].replace(' missing', '')}",
                                   hint=None if cap == "runsc" else
                                   "run `python -m k3snb.runners.runsc fetch` (or scripts/setup.sh) first")


_MISSING_TEXT = {
    "root": "not root",
    "runsc": "runsc missing",
    "runsc2024": "runsc 2024 build missing",
    "k3s": "k3s binary missing",
}


@cache
def _has(cap: str, runsc: str | None) -> bool:
    from .. import _capabilities as c

    if cap == "root":
        return c.is_root()
    if cap == "runsc" and runsc is not None:
        from ..runners.runsc import find_runsc

        try:
            find_runsc(runsc)
            return True
        except K3snbError:  # RunscMissing, or a path that is no runsc
            return False
    check = {"runsc": c.has_runsc, "runsc2024": c.has_runsc_2024, "k3s": c.has_k3s}[cap]
    return bool(check())


def default_registry() -> Path:
    env = os.environ.get("K3SNB_REGISTRY")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data" / "experiments.yaml"


class Registry(Table):
    """All experiments of one registry file, in file order: a listing like every other (iteration yields ids,
    ``.rows``/``.to_frame()`` one row each); ``registry["05"]`` finds an :class:`Experiment` by id or NN prefix,
    ``.entries`` holds them all."""

    _title_text = "experiments"
    _section = "experiments"
    _columns = ("id", "title", "claims", "requires", "runners", "ready")

    def __init__(self, file: Path, entries: list[Experiment]) -> None:
        self.file = file
        self.entries = entries

    @property
    def rows(self) -> list[dict[str, Any]]:  # computed on use: "ready" looks at this machine now
        rows = []
        for e in self.entries:
            missing = e.missing()
            rows.append({
                "id": e.id,
                "title": e.title,
                "claims": ", ".join(e.claims),
                "requires": ", ".join([*e.requires, *e.programs]),
                "runners": ", ".join(e.runners),
                "ready": "yes" if not missing else "no: " + "; ".join(missing),
            })
        return rows

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    def __iter__(self):
        return iter(self.ids)

    def __getitem__(self, key: str) -> Experiment:
        for e in self.entries:
            if key == e.id or key == e.id.split("-", 1)[0] or key == e.notebook:
                return e
        raise InvalidParameter(
            f"unknown experiment {key!r}; valid: {', '.join(self.ids)}",
            hint="list them with `k3snb experiments`",
        )

    def select(self, ids: list[str] | tuple[str, ...] | str | None) -> list[Experiment]:
        if ids is None or ids == []:
            return list(self.entries)
        if isinstance(ids, str):
            ids = [ids]
        out: list[Experiment] = []
        for i in ids:
            e = self[str(i)]
            if e not in out:
                out.append(e)
        return out

    def summary(self) -> dict[str, Any]:
        ready = sum(1 for e in self.entries if not e.missing())
        return {"experiments": len(self.entries), "ready here": ready, "registry": str(self.file)}

    def _repr_text(self) -> str:
        from .._cliopts import text_table

        rows = []
        for e in self.entries:
            missing = e.missing()
            rows.append({"id": e.id, "claims": list(e.claims),
                         "state": "ready" if not missing else "skip: " + "; ".join(missing)})
        # claims wrap after ", " instead of being cut mid-id
        return f"{len(self.entries)} experiments ({self.file.name})\n" + text_table(
            rows, [("id", "experiment", 28), ("claims", "claims", 34), ("state", "status", 60)], indent="  ")

    def __repr__(self) -> str:
        return self._repr_text()


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """Read and validate a registry file (default: the packaged one, or ``$K3SNB_REGISTRY``).

    Notebooks are found in ``$K3SNB_NOTEBOOKS`` if set, else in the registry's ``notebook_dir`` relative
    to the registry file; the packaged registry says ``../notebooks``, i.e. ``k3snb/notebooks`` — a
    symlink to the checkout's ``notebooks/`` in an editable install, the notebooks themselves in a wheel.

    Raises:
        UsageError: the file is missing or malformed (names the entry and the bad key).
    """
    import yaml

    file = Path(path) if path is not None else default_registry()
    try:
        doc = yaml.safe_load(file.read_text())
    except OSError as e:
        raise UsageError(f"cannot read experiment registry {file}: {e.strerror}",
                         hint="pass an existing YAML file (--registry / K3SNB_REGISTRY)") from e
    except yaml.YAMLError as e:
        raise UsageError(f"experiment registry {file} is not valid YAML: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("experiments"), list):
        raise UsageError(f"experiment registry {file} has no `experiments:` list")
    nb_env = os.environ.get("K3SNB_NOTEBOOKS")
    nb_dir = Path(nb_env) if nb_env else (file.parent / doc.get("notebook_dir", ".")).resolve()
    defaults = doc.get("defaults") or {}
    entries: list[Experiment] = []
    for i, raw in enumerate(doc["experiments"]):
        where = f"{file.name} entry {i}"
        if not isinstance(raw, dict) or "id" not in raw or "notebook" not in raw:
            raise UsageError(f"{where}: every entry needs `id` and `notebook`")
        unknown = set(raw) - _KEYS
        if unknown:
            raise UsageError(f"{where} ({raw['id']}): unknown key(s) {sorted(unknown)}; valid: {sorted(_KEYS)}")
        req = tuple(raw.get("requires") or ())
        bad = [r for r in req if r not in CAPABILITIES]
        if bad:
            raise UsageError(f"{where} ({raw['id']}): unknown requirement(s) {bad}; valid: {list(CAPABILITIES)}",
                             hint="list executables under `programs:` instead")
        runners = tuple(raw.get("runners") or defaults.get("runners") or ("gvisor",))
        bad = [r for r in runners if r not in KNOWN_RUNNERS]
        if bad:
            raise UsageError(f"{where} ({raw['id']}): unknown runner(s) {bad}; valid: {list(KNOWN_RUNNERS)}")
        if raw["id"] in {e.id for e in entries}:
            raise UsageError(f"{where}: duplicate id {raw['id']!r}")
        entries.append(Experiment(
            id=str(raw["id"]),
            notebook=str(raw["notebook"]),
            title=str(raw.get("title", raw["id"])),
            path=nb_dir / str(raw["notebook"]),
            claims=tuple(str(c) for c in raw.get("claims") or ()),
            requires=req,
            programs=tuple(raw.get("programs") or ()),
            runners=runners,
            parameters=dict(raw.get("parameters") or {}),
            timeout=float(raw.get("timeout", defaults.get("timeout", 1800))),
            slow=bool(raw.get("slow", False)),
        ))
    return Registry(file=file, entries=entries)


def list_experiments(registry: str | os.PathLike | None = None) -> Registry:
    """The experiment registry as a Rich table: id, title, seed claims, requirements, ready here."""
    return load_registry(registry)
