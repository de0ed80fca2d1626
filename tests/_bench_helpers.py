"""Loads a script of bench/ (not a package) as a module, for the tests of its functions."""

from __future__ import annotations

import importlib.util
import pathlib
import types

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str) -> types.ModuleType:
    """bench/<name>.py, executed fresh."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
