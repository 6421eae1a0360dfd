"""Syscall tracing and interception with ptrace (capture -> decode -> present).

Cell API: :func:`trace` (a :class:`Trace` with a lazily loaded DataFrame), :func:`intercept`
(path redirection, fake files, statfs f_type spoofing, forced errnos via :class:`Rule`),
:func:`fake_procsys` (per-file /proc/sys fakes from a probe), :func:`diff` of two traces.
The tracer itself runs as ``python -m k3snb.trace`` (also for long-running k3s).
"""

from ._rules import Rule, load_rules, save_rules
from .intercept import InterceptResult, intercept
from .procsys import fake_procsys
from .trace import Trace, TraceDiff, diff, trace

__all__ = ["Rule", "save_rules", "load_rules", "trace", "Trace", "TraceDiff", "diff", "intercept",
           "InterceptResult", "fake_procsys"]
