"""Capability flags computed once: what this machine offers the kit. Tests skip on the same flags.

Only "not installed" answers False; any other failure (a bug, a broken binary) propagates, so a
missing layer or a typo is never mistaken for a missing component.
"""

from __future__ import annotations

import shutil
from functools import cache

from ._paths import is_root as _is_root
from .errors import MissingDependency


@cache
def is_root() -> bool:
    return _is_root()


def _found(find, *args) -> bool:
    try:
        find(*args)
        return True
    except MissingDependency:  # RunscMissing, K3sBinaryMissing: not installed here
        return False


@cache
def has_runsc() -> bool:
    from .runners.runsc import find_runsc

    return _found(find_runsc, "2022") or _found(find_runsc, None)


@cache
def has_runsc_2024() -> bool:
    from .runners.runsc import find_runsc

    return _found(find_runsc, "2024")


@cache
def has_k3s() -> bool:
    from .k3s.binary import find_k3s

    return _found(find_k3s)


def has_program(name: str) -> bool:
    return shutil.which(name) is not None
