"""``TorchMemoryCollector`` with a stand-in torch module or the model processes' reports (no torch imported)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metrics import TorchMemoryCollector

TORCH_FAMILIES = {"gateway_torch_memory_allocated_bytes", "gateway_torch_memory_reserved_bytes"}


def families(registry: CollectorRegistry) -> dict[str, dict[str, float]]:
    return {
        f.name: {s.labels["device"]: s.value for s in f.samples}
        for f in text_string_to_metric_families(generate_latest(registry).decode())
    }


def test_absent_when_torch_is_not_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    # The collector must not import torch itself: without it in sys.modules there is nothing to read.
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert list(TorchMemoryCollector().collect()) == []


def test_present_per_device_with_cuda() -> None:
    allocated = {0: 1024, 1: 2048}
    reserved = {0: 4096, 1: 8192}
    fake_torch = SimpleNamespace(
        cuda=SimpleNamespace(
            is_available=lambda: True,
            device_count=lambda: 2,
            memory_allocated=lambda i: allocated[i],
            memory_reserved=lambda i: reserved[i],
        )
    )
    registry = CollectorRegistry()
    registry.register(TorchMemoryCollector(torch_module=fake_torch))
    got = families(registry)
    assert got["gateway_torch_memory_allocated_bytes"] == {"cuda:0": 1024.0, "cuda:1": 2048.0}
    assert got["gateway_torch_memory_reserved_bytes"] == {"cuda:0": 4096.0, "cuda:1": 8192.0}


def test_a_raising_torch_does_not_raise_from_collect() -> None:
    def boom() -> bool:
        raise RuntimeError("CUDA driver error")

    fake_torch = SimpleNamespace(cuda=SimpleNamespace(is_available=boom))
    assert list(TorchMemoryCollector(torch_module=fake_torch).collect()) == []


def test_model_process_reports_are_summed_per_device() -> None:
    # With model processes the numbers come from their ``memory`` messages (sent only on a GPU, so given here);
    # two models on one GPU both count, and no report means no series.
    reports: list[tuple[str, float, float]] = []
    registry = CollectorRegistry()
    registry.register(TorchMemoryCollector(reports=lambda: reports))
    assert not TORCH_FAMILIES & families(registry).keys()
    reports += [("cuda:0", 100.0, 400.0), ("cuda:0", 50.0, 200.0), ("cuda:1", 7.0, 8.0)]
    got = families(registry)
    assert got["gateway_torch_memory_allocated_bytes"] == {"cuda:0": 150.0, "cuda:1": 7.0}
    assert got["gateway_torch_memory_reserved_bytes"] == {"cuda:0": 600.0, "cuda:1": 8.0}
