"""Sandbox runners: where an experiment runs (layer 1 of the kit)."""

from .base import Runner, RunResult, get_runner

__all__ = ["Runner", "RunResult", "get_runner"]
