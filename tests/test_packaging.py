"""pyproject.toml and environment.yml describe the same environment; the console script exists."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _split(spec: str) -> tuple[str, str]:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", spec)
    assert m, spec
    return re.sub(r"[-_.]+", "-", m.group(1)).lower(), m.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(_split(s) for s in specs) | {"python": project["requires-python"]}


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out: dict[str, str] = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for s in items:
            if s.startswith("-e") or s == "pip":
                continue
            name, bound = _split(s)
            assert name not in out, f"{name} listed twice in environment.yml"
            out[name] = bound
    return out


def test_environment_yml_matches_pyproject():
    assert _environment() == _pyproject()


def test_environment_installs_the_kit_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip


def test_console_script_entry_point():
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "k3snb"]
    assert ep.value == "k3snb.cli:main"
    assert (Path(sys.executable).parent / "k3snb").is_file()


def test_registry_ships_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "data/*.yaml" in config["tool"]["setuptools"]["package-data"]["k3snb"]
    assert (ROOT / "k3snb" / "data" / "experiments.yaml").is_file()
