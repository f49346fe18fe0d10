"""The unit tier's own guard (``tests.unit.no_torch``): while it is on, the model libraries cannot be imported."""

from __future__ import annotations

import importlib

import pytest

from tests.unit import no_torch


@pytest.fixture
def guard_on() -> None:
    if not no_torch.installed():
        pytest.skip("the unit tier runs in one process with the others here: the guard is on only when it runs alone")


@pytest.mark.parametrize(
    "name", ["torch", "transformers", "tokenizers", "safetensors", "torch.nn", "transformers.generation"]
)
def test_the_model_libraries_cannot_be_imported(guard_on: None, name: str) -> None:
    with pytest.raises(ModuleNotFoundError, match="blocked in the unit tier"):
        importlib.import_module(name)


def test_nothing_imported_them_before_the_guard(guard_on: None) -> None:
    assert no_torch.imported_model_libraries() == []


def test_other_packages_import_as_usual(guard_on: None) -> None:
    assert importlib.import_module("json").loads("[1]") == [1]
    assert importlib.import_module("gateway.scheduler").ModelScheduler.__name__ == "ModelScheduler"
