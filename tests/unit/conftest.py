"""Unit tier: one file per module of the domain code, no model, no torch, time on a ``ManualClock``.

A run that asks only for paths inside ``tests/unit`` (``pytest tests/unit``, one file, one test) makes the
model libraries unimportable (``tests.unit.no_torch``), so whatever this tier imports is checked torch-free.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit import no_torch

UNIT_DIR = Path(__file__).resolve().parent


def _only_unit_paths(config: pytest.Config) -> bool:
    paths = [Path(config.invocation_params.dir, arg.split("::", 1)[0]).resolve() for arg in config.args]
    return bool(paths) and all(path == UNIT_DIR or UNIT_DIR in path.parents for path in paths)


def pytest_configure(config: pytest.Config) -> None:
    if _only_unit_paths(config):
        no_torch.install()
