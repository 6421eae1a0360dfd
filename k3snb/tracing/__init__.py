"""Syscall tracing and interception with ptrace (capture -> decode -> present).

Cell API: :func:`trace` (a :class:`Trace` with a lazily loaded DataFrame), :func:`intercept`
(path redirection, fake files, statfs f_type spoofing, forced errnos via :class:`Rule`),
:func:`fake_procsys` (per-file /proc/sys fakes from a probe), :func:`diff_traces` (``Trace.diff``)
of two traces. ``measurements`` holds the functions behind notebooks 04/06/09/24.
The tracer itself runs as ``python -m k3snb.tracing`` (also for long-running k3s).
"""

import importlib
from typing import Any

# name -> submodule; loaded on first use so ``python -m k3snb.tracing`` (the tracer) stays light.
# (Submodules are named _trace/_intercept, not trace/intercept: importing a submodule sets
# the package attribute of its name, which would shadow the function of the same name.)
_API = {
    "Rule": "._rules", "save_rules": "._rules", "load_rules": "._rules",
    "trace": "._trace", "Trace": "._trace", "TraceDiff": "._trace", "diff_traces": "._trace",
    "intercept": "._intercept", "InterceptResult": "._intercept", "fake_procsys": ".fakes",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    mod = _API.get(name)
    if mod is None:
        raise AttributeError(f"module 'k3snb.tracing' has no attribute {name!r}")
    module = importlib.import_module(mod, __name__)
    for n, m in _API.items():  # bind the submodule's other public names too
        if m == mod:
            globals()[n] = getattr(module, n)
    return globals()[name]


def __dir__() -> list[str]:
    return __all__

