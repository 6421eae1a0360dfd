"""Shared fixtures: keep every byte of state inside the test run folder; capability skips."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Jupyter, IPython, matplotlib and the kit's temp dirs stay inside one folder per test session
# (scripts/test.sh names it; otherwise a temp dir removed when the session ends).
_OWN_RUN = not os.environ.get("K3SNB_TEST_RUN")
_RUN = Path(os.environ.get("K3SNB_TEST_RUN") or tempfile.mkdtemp(prefix="k3snb-tests-"))
for var, sub in {
    "K3SNB_TMP": "tmp",
    "IPYTHONDIR": "ipython",
    "JUPYTER_CONFIG_DIR": "jupyter/config",
    "JUPYTER_DATA_DIR": "jupyter/data",
    "JUPYTER_RUNTIME_DIR": "jupyter/runtime",
    "MPLCONFIGDIR": "mpl",
}.items():
    os.environ.setdefault(var, str(_RUN / sub))
    Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")


def pytest_sessionfinish(session, exitstatus):
    if _OWN_RUN:
        shutil.rmtree(_RUN, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    from k3snb import _capabilities as cap

    reasons = {
        "root": (cap.is_root, "needs root (run the suite as root)"),
        "runsc": (cap.has_runsc, "needs runsc: apt-get install runsc"),
        "runsc2024": (cap.has_runsc_2024, "needs the 2024 runsc build: run `bash scripts/setup.sh` (fetches it via apt)"),
        "k3s": (
            cap.has_k3s,
            "needs a k3s binary: set K3SNB_K3S, put k3s on PATH, or `k3snb k3s install VERSION` (offline here)",
        ),
    }
    cache: dict[str, bool] = {}
    for item in items:
        for name, (check, reason) in reasons.items():
            if item.get_closest_marker(name) is not None:
                if name not in cache:
                    cache[name] = bool(check())
                if not cache[name]:
                    item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path
