"""``TorchMemoryCollector`` against the real torch (the CPU build): no CUDA, so no torch memory families."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metrics import TorchMemoryCollector

TORCH_FAMILIES = {"gateway_torch_memory_allocated_bytes", "gateway_torch_memory_reserved_bytes"}


def families(registry: CollectorRegistry) -> dict[str, dict[str, float]]:
    return {
        f.name: {s.labels["device"]: s.value for s in f.samples}
        for f in text_string_to_metric_families(generate_latest(registry).decode())
    }


def test_absent_on_this_cpu_machine() -> None:
    import torch  # the real CPU build: imported, but no CUDA

    assert not torch.cuda.is_available()
    registry = CollectorRegistry()
    registry.register(TorchMemoryCollector())
    assert not TORCH_FAMILIES & families(registry).keys()
