"""Capability flags computed once: what this machine offers the kit. Tests skip on the same flags."""

from __future__ import annotations

import os
import shutil
from functools import cache


@cache
def is_root() -> bool:
    return os.geteuid() == 0


@cache
def has_runsc() -> bool:
    from .runners.runsc import find_runsc

    try:
        find_runsc("2022")
        return True
    except Exception:
        try:
            find_runsc(None)
            return True
        except Exception:
            return False


@cache
def has_runsc_2024() -> bool:
    from .runners.runsc import find_runsc

    try:
        find_runsc("2024")
        return True
    except Exception:
        return False


@cache
def has_k3s() -> bool:
    from .k3s.binary import find_k3s

    try:
        find_k3s()
        return True
    except Exception:
        return False


def has_program(name: str) -> bool:
    return shutil.which(name) is not None
