"""Syscall tracing and interception with ptrace (capture -> decode -> present).

Cell API: :func:`trace` (a :class:`Trace` with a lazily loaded DataFrame), :func:`intercept`
(path redirection, fake files, statfs f_type spoofing, forced errnos via :class:`Rule`),
:func:`fake_procsys` (per-file /proc/sys fakes from a probe), :func:`diff` of two traces.
The tracer itself runs as ``python -m k3snb.trace`` (also for long-running k3s).
"""

import importlib
from typing import Any

# name -> submodule; loaded on first use so ``python -m k3snb.trace`` (the tracer) stays light
_API = {
    "Rule": "._rules", "save_rules": "._rules", "load_rules": "._rules",
    "trace": ".trace", "Trace": ".trace", "TraceDiff": ".trace", "diff": ".trace",
    "intercept": ".intercept", "InterceptResult": ".intercept", "fake_procsys": ".procsys",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    mod = _API.get(name)
    if mod is None:
        raise AttributeError(f"module 'k3snb.trace' has no attribute {name!r}")
    module = importlib.import_module(mod, __name__)
    # bind every name of that submodule now: importing ``.trace``/``.intercept`` sets the package
    # attribute of the same name to the *module*, which must not shadow the function
    for n, m in _API.items():
        if m == mod:
            globals()[n] = getattr(module, n)
    return globals()[name]


def __dir__() -> list[str]:
    return __all__
