"""Sandbox runners: where an experiment runs (layer 1 of the kit), and the one runner-spec parser.

A *runner spec* names a runner everywhere the kit runs something (``runner=`` in the API,
``--runner`` in the CLI)::

    "host"                      Host()
    "gvisor"                    GVisor()                      (system runsc)
    "gvisor:2024"               GVisor(runsc="2024")
    "gvisor:2024:ptrace"        GVisor(runsc="2024", platform="ptrace")
    "/path/to/runsc"            GVisor(runsc="/path/to/runsc")
    "gvisor:/path/to/runsc"     the same, explicitly
    a Runner object             itself (options must then be empty)

Options given next to a spec go to the runner; options meant for another kind of runner are
recorded in ``runner.ignored_options`` rather than refused, so callers never branch on the kind.
Ask ``runner.capabilities`` what the environment offers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidParameter
from .base import Capabilities, Runner, RunResult
from .gvisor import PLATFORMS, GVisor
from .host import Host

REGISTRY: dict[str, type[Runner]] = {"host": Host, "gvisor": GVisor}
_BUILDS = ("2022", "2024")
_HINT = ("write a runner spec as 'host', 'gvisor', 'gvisor:2024', 'gvisor:2024:ptrace', "
         "or a path to a runsc binary")


def register_runner(name: str, cls: type[Runner]) -> None:
    """Make ``cls`` available under ``name`` in runner specs."""
    if not (isinstance(cls, type) and issubclass(cls, Runner)):
        raise InvalidParameter(f"{cls!r} is not a Runner subclass", hint="subclass k3snb.runners.Runner")
    REGISTRY[name] = cls


def parse_spec(spec: str | os.PathLike | None) -> tuple[str, dict[str, Any]]:
    """Split a runner spec into (registry name, options); see the module docstring for the forms.

    Raises:
        InvalidParameter: unknown runner name, runsc build or platform.
    """
    if spec is None:
        return "host", {}
    if isinstance(spec, os.PathLike):
        return "gvisor", {"runsc": os.fspath(spec)}
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidParameter(f"bad runner spec {spec!r}", hint=_HINT)
    text = spec.strip()
    if text.startswith("/") or text.startswith("./"):
        return "gvisor", {"runsc": text}
    name, _, rest = text.partition(":")
    if name not in REGISTRY:
        raise InvalidParameter(f"unknown runner {name!r}; valid: {', '.join(sorted(REGISTRY))}", hint=_HINT)
    if not rest:
        return name, {}
    if name != "gvisor":
        raise InvalidParameter(f"runner {name!r} takes no ':' parameters (got {spec!r})", hint=_HINT)
    opts: dict[str, Any] = {}
    if rest.startswith("/"):  # a runsc path, maybe followed by ":platform"
        path, _, platform = rest.rpartition(":") if rest.rsplit(":", 1)[-1] in PLATFORMS else (rest, "", "")
        opts["runsc"] = path
        if platform:
            opts["platform"] = platform
        return name, opts
    parts = rest.split(":")
    if len(parts) > 2:
        raise InvalidParameter(f"bad runner spec {spec!r}: too many ':' parts", hint=_HINT)
    build = parts[0]
    if build:
        if build not in _BUILDS:
            raise InvalidParameter(f"unknown runsc build {build!r} in {spec!r}; valid: {', '.join(_BUILDS)}",
                                   hint=_HINT)
        opts["runsc"] = build
    if len(parts) == 2:
        platform = parts[1]
        if platform not in PLATFORMS or platform is None:
            raise InvalidParameter(f"unknown platform {platform!r} in {spec!r}; valid: ptrace, systrap, kvm",
                                   hint=_HINT)
        opts["platform"] = platform
    return name, opts


def resolve(spec: str | os.PathLike | Runner | None = None, **options: Any) -> Runner:
    """Return a Runner for a spec (not started): pass a Runner through, or build one.

    Options complete the spec (``resolve("gvisor", runsc="2024")`` equals ``resolve("gvisor:2024")``);
    an option that contradicts the spec is an error. None values are treated as not given.

    Raises:
        InvalidParameter: bad spec, contradicting options, or options given with a Runner object.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(spec, Runner):
        if options:
            raise InvalidParameter(f"runner options {sorted(options)} only apply to a runner name",
                                   hint="configure the Runner object itself, or pass runner='gvisor:2024' "
                                        "and options")
        return spec
    name, opts = parse_spec(spec)
    for k, v in options.items():
        if k in opts and str(opts[k]) != str(v):
            raise InvalidParameter(f"runner spec {spec!r} says {k}={opts[k]!r} but the option says {k}={v!r}",
                                   hint="give it in one place: in the spec or as an option")
    return REGISTRY[name](**{**opts, **options})


def get_runner(runner: str | os.PathLike | Runner | None = None, **options: Any) -> Runner:
    """Same as :func:`resolve` (kept: older notebooks call it)."""
    return resolve(runner, **options)


def format_spec(name: str, **options: Any) -> str:
    """The spec string for a runner name and options (the inverse of :func:`parse_spec`); options the
    runner's spec has no field for are left out (``format_spec("host", runsc="2024") == "host"``)."""
    if name not in REGISTRY:
        raise InvalidParameter(f"unknown runner {name!r}; valid: {', '.join(sorted(REGISTRY))}", hint=_HINT)
    fields = [str(options.get(f) or "") for f in REGISTRY[name].SPEC_FIELDS]
    while fields and not fields[-1]:
        fields.pop()
    return ":".join([name, *fields])


def expand_spec(spec: str | os.PathLike | None, runsc: Sequence[str] = ("2022", "2024")) -> list[str]:
    """One spec per runsc build for a runner that takes a build but whose spec names none
    (``"gvisor"`` -> ``["gvisor:2022", "gvisor:2024"]``); any other spec as it is (``["host"]``)."""
    name, opts = parse_spec(spec)
    if "runsc" not in REGISTRY[name].SPEC_FIELDS or opts.get("runsc"):
        return [format_spec(name, **opts)]
    return [format_spec(name, **{**opts, "runsc": b}) for b in runsc]


def requirements(spec: str | os.PathLike | Runner | None) -> tuple[str, ...]:
    """What a runner of this spec needs from the machine (``("root", "runsc")`` for gVisor, ``()``
    for the host), without building it: ask this instead of testing the runner's name."""
    if isinstance(spec, Runner):
        return type(spec).REQUIRES
    return REGISTRY[parse_spec(spec)[0]].REQUIRES


def ignored_by(spec: str | os.PathLike | None, **options: Any) -> list[str]:
    """Names of the options (with a value that would change something) that a runner built from
    ``spec`` would ignore, without building it (for CLIs that refuse such flags up front)."""
    name, _ = parse_spec(spec)
    return sorted(k for k, v in options.items()
                  if k in REGISTRY[name].IGNORES and v not in (None, False, (), [], {}, ""))


def check_spec(spec: str | os.PathLike | None, **options: Any) -> Runner:
    """Validate a runner spec and its options as a CLI takes them (``--runner``, ``--runsc`` ...), without
    starting anything: an option the runner would ignore is refused, then the runner is built, so an
    unknown runsc build or a missing binary fails here, as a usage error, before any work starts.
    Returns that runner (not started).

    Raises:
        InvalidParameter: bad spec, an option the runner ignores, or a bad option value.
    """
    ignored = ignored_by(spec, **options)
    if ignored:
        flags = ", ".join("--" + k.replace("_", "-") for k in ignored)
        takers = sorted(n for n, c in REGISTRY.items() if not set(ignored) & set(c.IGNORES))
        raise InvalidParameter(f"{flags}: the {parse_spec(spec)[0]} runner ignores it (--runner {spec})",
                               hint=f"use a runner that takes it (--runner {' or '.join(takers) or '?'}), "
                                    f"or drop {flags}")
    return resolve(spec, **options)


def spec_label(spec: str | os.PathLike | Runner | None, **options: Any) -> str:
    """The label a runner built from this spec would carry (``host``, ``gvisor-2024``), without
    building it (no root or runsc needed)."""
    if isinstance(spec, Runner):
        return spec.label
    name, opts = parse_spec(spec)
    opts.update({k: v for k, v in options.items() if v is not None})
    return REGISTRY[name].spec_label(opts)


__all__ = ["REGISTRY", "Capabilities", "GVisor", "Host", "RunResult", "Runner", "check_spec", "expand_spec", "format_spec", "get_runner", "ignored_by", "parse_spec", "requirements",
           "register_runner", "resolve", "spec_label"]
