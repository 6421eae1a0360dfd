"""Planning a run: ids, runner options, matrix axes and parameters into cells, validated before anything is created."""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import itertools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter, K3snbError, UsageError
from ._files import check_writable
from ._params import Parameter, check_value, notebook_parameters
from ._registry import KNOWN_RUNNERS, Experiment, load_registry

ENV_AXES = ("runner", "runsc", "platform")  # axes that pick the environment; any other axis is a parameter
PLATFORMS = ("systrap", "ptrace", "kvm")
RUNNER_PARAM = "runner"  # the one parameter through which a notebook receives its runner spec


@dataclass
class Cell:
    """One experiment in one environment with its parameters: one worker process, fresh kernel, summary row."""

    exp: Experiment
    name: str  # folder and row id, unique in the run
    runner: str | None  # runner spec injected as parameter `runner` (host, gvisor, gvisor:2024:ptrace)
    axes: dict[str, Any] = field(default_factory=dict)  # this cell's matrix coordinates
    params: dict[str, Any] = field(default_factory=dict)
    skip: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.name, "experiment": self.exp.id, "runner": self.runner, "axes": self.axes,
                "parameters": self.params, "skip": self.skip}


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``"gvisor:2024:ptrace"`` → ``("gvisor", "2024", "ptrace")``; ``"host"`` → ``("host", None, None)``.

    Raises:
        InvalidParameter: what :func:`k3snb.runners.parse_spec` refuses, or a kind the registry doesn't know.
    """
    from ..runners import parse_spec as runner_spec

    kind, opts = runner_spec(str(spec))
    if kind not in KNOWN_RUNNERS:
        raise InvalidParameter(f"runner {kind!r} cannot run experiments; valid: {', '.join(KNOWN_RUNNERS)}")
    return kind, (str(opts["runsc"]) if opts.get("runsc") else None), opts.get("platform")


def compose_spec(kind: str, build: str | None, platform: str | None) -> str:
    """The spec string (``gvisor:2024:ptrace``, ``host``): :func:`k3snb.runners.format_spec`."""
    from ..runners import format_spec

    return format_spec(kind, runsc=build, platform=platform)


def _runsc_label(build: str) -> str:
    """A build as it goes into a spec and a folder name: 2022, 2024, or the path's file name."""
    return build if build in ("2022", "2024") else re.sub(r"[^A-Za-z0-9._-]", "_", build)


def _axis_values(name: str, values: Any) -> list[Any]:
    vals = values if isinstance(values, list | tuple) else [values]
    if not vals:
        raise InvalidParameter(f"matrix axis {name!r} has no values", hint=f"pass --matrix {name}=A,B")
    if len(set(map(repr, vals))) != len(vals):
        raise InvalidParameter(f"matrix axis {name!r} repeats a value: {vals}", hint="use --repeat N for repeats")
    return list(vals)


def plan(
    ids: Iterable[str] | str | None,
    params: Mapping[str, Any] | None = None,
    runners: Iterable[str] | str | None = None,
    runsc: str | os.PathLike | None = None,
    registry: str | os.PathLike | None = None,
    matrix: Mapping[str, Any] | None = None,
    repeat: int = 1,
    here: bool = True,
) -> list[Cell]:
    """Expand the selection into cells.

    ``--runner``/``--runsc`` and the matrix's environment axes must be honoured by every selected
    experiment (it declares the ``runner`` parameter and supports that runner kind), or the run
    stops with a UsageError naming the ones that can't. A cell this machine can't provide (a
    missing runsc build, no root, a missing program) is kept as a skipped cell with the reason.

    Raises:
        UsageError: unknown id/runner/axis/parameter, a malformed value, an option an experiment can't honour.
    """
    reg = load_registry(registry)
    explicit = ids is not None and ids != [] and ids != ()
    selected = reg.select(list(ids) if explicit and not isinstance(ids, str) else ids)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise InvalidParameter(f"repeat must be a positive integer, got {repeat!r}", hint="pass --repeat 3")

    matrix = dict(matrix or {})
    axes = {k: _axis_values(k, v) for k, v in matrix.items()}
    if isinstance(runners, str):
        runners = [runners]
    runners = list(runners) if runners is not None else None
    if runners is not None:
        if not runners:
            raise InvalidParameter("no runner given", hint="pass --runner host or --runner gvisor")
        if "runner" in axes:
            raise InvalidParameter("give runners either with --runner or with --matrix runner=..., not both")
        axes["runner"] = runners
    if runsc is not None:
        if "runsc" in axes:
            raise InvalidParameter("give runsc builds either with --runsc or with --matrix runsc=..., not both")
        axes["runsc"] = [str(runsc)]
    for spec in axes.get("runner", []):
        parse_spec(spec)
    for build in axes.get("runsc", []):
        from ..runners.runsc import find_runsc

        if build not in ("2022", "2024"):
            find_runsc(str(build))  # a path that does not exist is a usage error; a missing build is a skip
        elif not isinstance(build, str):
            raise InvalidParameter(f"runsc build must be text, got {build!r}")
    axes["runsc"] = [str(b) for b in axes["runsc"]] if "runsc" in axes else None
    if axes["runsc"] is None:
        del axes["runsc"]
    for p in axes.get("platform", []):
        if p not in PLATFORMS:
            raise InvalidParameter(f"unknown platform {p!r}; valid: {', '.join(PLATFORMS)}",
                                   hint="pass --matrix platform=systrap,ptrace")

    declared: dict[str, dict[str, Parameter] | None] = {}
    for e in selected:
        declared[e.id] = notebook_parameters(e.path) if e.path.is_file() else None
        unknown = set(e.parameters) - set(declared[e.id]) if declared[e.id] is not None else set()
        if unknown:
            raise UsageError(f"registry defaults {sorted(unknown)} of {e.id} are not parameters of {e.notebook}")

    # environment options must be honoured by every selected experiment, or nothing runs
    env_axes = [a for a in ENV_AXES if a in axes]
    if env_axes:
        deaf = [e.id for e in selected if declared[e.id] is not None and RUNNER_PARAM not in declared[e.id]]
        if deaf:
            flags = ", ".join(f"--matrix {a}" if a in matrix else f"--{a}" for a in env_axes)
            raise UsageError(
                f"{', '.join(deaf)} cannot honour {flags}: the notebook has no `{RUNNER_PARAM}` parameter",
                hint="leave those experiments out of this run, or give their notebooks a `runner` parameter")
        kinds = {parse_spec(s)[0] for s in axes.get("runner", [])}
        if "runsc" in axes or "platform" in axes:
            kinds |= {"gvisor"} if "runner" not in axes else set()
        wrong = [f"{e.id} (runs on {', '.join(e.runners)})" for e in selected
                 if kinds - set(e.runners)]
        if wrong:
            raise UsageError(f"runner kind {', '.join(sorted(kinds))} is not supported by {', '.join(wrong)}",
                             hint="pick runners each selected experiment lists (`k3snb experiments`)")
        if "host" in kinds and ("runsc" in axes or "platform" in axes):
            raise UsageError("--runsc / platform axes do not apply to the host runner",
                             hint="use gvisor runners with --runsc, or drop --runsc")

    param_axes = {k: v for k, v in axes.items() if k not in ENV_AXES}
    for name in param_axes:
        if not any(declared[e.id] and name in declared[e.id] for e in selected):
            valid = sorted({p for d in declared.values() if d for p in d} | set(ENV_AXES))
            raise InvalidParameter(f"unknown matrix axis {name!r}: not an environment axis and no selected notebook "
                                   f"declares it; valid: {', '.join(valid)}")

    scoped: dict[str, dict[str, Any]] = {e.id: {} for e in selected}
    for key, value in (params or {}).items():
        if ":" in key:
            target, name = key.split(":", 1)
            e = reg[target]
            if e not in selected:
                raise InvalidParameter(f"parameter {key!r} targets {e.id}, which is not selected for this run")
            known = declared[e.id]
            if known is not None and name not in known:
                raise InvalidParameter(f"unknown parameter {name!r} for {e.id}; valid: {', '.join(sorted(known)) or '(none)'}")
            scoped[e.id][name] = value if known is None else check_value(e.id, known[name], value)
        else:
            takers = [e for e in selected if declared[e.id] and key in declared[e.id]]
            if not takers:
                valid = sorted({p for d in declared.values() if d for p in d})
                raise InvalidParameter(
                    f"unknown parameter {key!r}: no selected notebook declares it; valid: {', '.join(valid) or '(none)'}",
                    hint="see a notebook's parameters with `k3snb experiments ID`",
                )
            for e in takers:
                scoped[e.id][key] = check_value(e.id, declared[e.id][key], value)
            deaf = [e.id for e in selected if e not in takers]
            if deaf:  # honoured by some: say who ignores it rather than dropping it silently
                print(f"note: -p {key} is ignored by {', '.join(deaf)}: no such parameter there "
                      f"(use -p ID:{key}=... to aim it at one experiment)", file=sys.stderr, flush=True)
            if key in param_axes:
                raise InvalidParameter(f"{key!r} is both a -p parameter and a matrix axis", hint="give it once")

    if explicit and here:
        for e in selected:
            if e.path.is_file():
                e.check_explicit(None if "runsc" in axes and len(axes["runsc"]) > 1 else runsc)

    names = list(axes)
    combos = list(itertools.product(*(axes[n] for n in names))) or [()]
    cells: list[Cell] = []
    for e in selected:
        decl = declared[e.id] or {}
        for combo in combos:
            coords = dict(zip(names, combo, strict=True))
            for r in range(1, repeat + 1):
                cells.append(_cell(e, decl, coords, scoped[e.id], r if repeat > 1 else None, axes, here))
    taken: set[str] = set()
    for c in cells:
        if c.name in taken:
            raise UsageError(f"two cells would share the folder {c.name!r}", hint="use distinct axis values")
        taken.add(c.name)
    return cells


def _cell(e: Experiment, decl: dict[str, Parameter], coords: dict[str, Any], scoped: dict[str, Any],
          rep: int | None, axes_values: dict[str, list], here: bool = True) -> Cell:
    if "runner" in coords:
        kind, build, platform = parse_spec(coords["runner"])
    elif RUNNER_PARAM in e.parameters:  # the registry's default spec (e.g. gvisor:2024 for a 2024-only study)
        kind, build, platform = parse_spec(e.parameters[RUNNER_PARAM])
    else:
        kind, build, platform = None, None, None
    if "runsc" in coords:
        build = coords["runsc"]
    if "platform" in coords:
        platform = coords["platform"]
    if kind is None:
        kind = e.runners[0] if (build is None and platform is None) else "gvisor"
    spec = compose_spec(kind, _runsc_label(build) if build and build in ("2022", "2024") else build, platform)
    params = dict(e.parameters)
    if RUNNER_PARAM in decl:
        params[RUNNER_PARAM] = spec
    params.update(scoped)
    axis_params = {k: v for k, v in coords.items() if k not in ENV_AXES}
    for k, v in axis_params.items():
        if k in decl:
            params[k] = check_value(e.id, decl[k], v)
    parts = [e.id]
    for k, v in coords.items():
        if len(axes_values.get(k, ())) < 2:
            continue  # a one-value axis (--runsc 2024) is a column, not part of every folder name
        label = _runsc_label(str(v)) if k == "runsc" else str(v).replace(":", "-")
        parts.append(re.sub(r"[^A-Za-z0-9._=-]", "_", label if k in ENV_AXES else f"{k}={label}"))
    if rep is not None:
        parts.append(f"r{rep}")
    cell_axes = dict(coords) | ({"repeat": rep} if rep is not None else {})
    missing = e.missing(build) if here else [m for m in e.missing(build) if m.startswith("notebook ")]
    if here and platform and not missing and not _platform_available(build, platform):
        missing.append(f"platform {platform} not available with runsc {build or 'default build'}")
    if not all(k in decl for k in axis_params) and decl:
        missing.append("no parameter " + ", ".join(k for k in axis_params if k not in decl))
    return Cell(e, "-".join(parts), spec, cell_axes, params, "; ".join(missing) or None)


@functools.cache
def build_platforms(build: str | None) -> tuple[str, ...]:
    """The platforms a runsc build offers, read from its own ``runsc flags`` text (default first)."""
    from ..runners.runsc import find_runsc

    try:
        r = subprocess.run([str(find_runsc(build)), "flags"], capture_output=True, text=True, timeout=30)
        out = r.stdout + r.stderr  # the flag list goes to stderr
    except (K3snbError, OSError, subprocess.SubprocessError):
        return ()
    m = re.search(r"-platform string\s+specifies which platform to use: ([^.]*)\.", out)
    if not m:
        return ()
    return tuple(w.split()[0] for w in m.group(1).split(",") if w.strip())


def _platform_available(build: str | None, platform: str) -> bool:
    if platform == "kvm" and not os.path.exists("/dev/kvm"):
        return False
    return platform in build_platforms(build)


def prepare_out(out: str | os.PathLike | None) -> Path:
    """Create and claim the run folder: of two runs given the same ``out`` exactly one wins.

    The folder is made with one ``mkdir`` and claimed by creating ``run.json`` with ``O_EXCL``, so a
    second run sees either the existing folder or the claim and stops.

    Raises:
        UsageError: ``out`` is not empty or claimed by another run, lies under a file, or is not writable.
    """
    if out is None:
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        base = Path(os.environ.get("K3SNB_RUNS", "runs")).absolute()
        for n in itertools.count(1):
            run = base / (stamp if n == 1 else f"{stamp}-{n}")
            created = _mkdir_new(run, out)
            if created is not None:
                break
    else:
        run = Path(out).absolute()
        if run.exists() and not run.is_dir():
            raise UsageError(f"--out {out} exists and is not a directory", hint="pass a new folder")
        created = _mkdir_new(run, out)
    label = f"--out {out or run}"
    try:
        fd = os.open(run / "run.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.close(fd)
    except FileExistsError:
        raise UsageError(f"{label} is not empty (another run uses it)", hint="pass a new or empty folder") from None
    except OSError as e:
        _remove_created(created or [])
        raise UsageError(f"{label} is not writable: {e.strerror or e}",
                         hint="pass a folder you can write to (--out DIR)") from None
    try:
        if created is None and any(p.name != "run.json" for p in run.iterdir()):
            raise UsageError(f"{label} is not empty", hint="pass a new or empty folder")
        check_writable(run, label)
    except UsageError:
        with contextlib.suppress(OSError):
            os.unlink(run / "run.json")
        _remove_created(created or [])
        raise
    return run


def _mkdir_new(run: Path, out) -> list[Path] | None:
    """mkdir ``run`` (and missing parents); the created dirs deepest first, or None if ``run`` existed."""
    created: list[Path] = []
    p = run.parent
    while not p.exists():
        created.append(p)
        p = p.parent
    try:
        run.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _remove_created(created)
        raise UsageError(f"--out {out or run} is not writable: {e.strerror or e}",
                         hint="pass a folder you can write to (--out DIR)") from None
    try:
        os.mkdir(run)  # atomic: of two runs racing for the same new folder exactly one creates it
    except FileExistsError:
        if not run.is_dir():
            _remove_created(created)
            raise UsageError(f"--out {out} exists and is not a directory", hint="pass a new folder") from None
        return None
    except OSError as e:
        _remove_created(created)
        raise UsageError(f"--out {out or run} is not writable: {e.strerror or e}",
                         hint="pass a folder you can write to (--out DIR)") from None
    return [run, *created]


def _remove_created(created: list[Path]) -> None:
    for d in created:  # deepest first
        shutil.rmtree(d, ignore_errors=True)
