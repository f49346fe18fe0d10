"""The unit tier's guard: torch, transformers, tokenizers and safetensors cannot be imported while it runs.

The unit tests cover the domain code (breaker, queue, scheduler, errors, settings, wire format, metrics), which
must not need a model library; this guard turns "it happens to work without torch" into a checked fact. A
finder first on ``sys.meta_path`` raises ``ModuleNotFoundError`` for those packages, as if they were not
installed, so a module that imports one at import time fails the tier's collection with its name in the error.

Installed by ``python -m pytest -p tests.unit.no_torch tests/unit`` (``make test-unit``: before any conftest is
loaded), and by ``tests/unit/conftest.py`` when a run asks only for paths inside ``tests/unit``. It is not
installed when the unit tests run in one process with the other tiers, which import torch.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

import pytest

BLOCKED = frozenset({"torch", "transformers", "tokenizers", "safetensors"})


class BlockModelLibraries(importlib.abc.MetaPathFinder):
    """Refuses to find the model libraries (and anything inside them)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(
                f"{fullname} is blocked in the unit tier (tests/unit runs without the model libraries)", name=fullname
            )
        return None


def imported_model_libraries() -> list[str]:
    return sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED)


def installed() -> bool:
    return any(isinstance(finder, BlockModelLibraries) for finder in sys.meta_path)


def install() -> None:
    """Block the model libraries from here on; a usage error if one was imported already (too late to check)."""
    already = imported_model_libraries()
    if already:
        raise pytest.UsageError(f"the unit tier must run without torch, but these are imported already: {already}")
    if not installed():
        sys.meta_path.insert(0, BlockModelLibraries())


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    install()
