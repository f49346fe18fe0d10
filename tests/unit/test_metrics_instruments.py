from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import metrics
from gateway.stats import GaugeSnapshot
from gateway.types import ModelInfo
from metrics import (
    BATCH_SIZE_BUCKETS,
    DURATION_BUCKETS,
    QUEUE_WAIT_BUCKETS,
    TIME_PER_TOKEN_BUCKETS,
    TTFT_BUCKETS,
    GatewayStateCollector,
    Instruments,
    register_default_collectors,
)

# The Metrics table of CONTRACT.md, copied by hand: (exposed name, type). The parser names a counter family
# without ``_total``. The GPU and torch families are checked in their own tests (they need a GPU).
CONTRACT = [
    ("gateway_requests_total", "counter"),
    ("gateway_request_duration_seconds", "histogram"),
    ("gateway_queue_wait_seconds", "histogram"),
    ("gateway_inference_duration_seconds", "histogram"),
    ("gateway_time_to_first_token_seconds", "histogram"),
    ("gateway_time_per_output_token_seconds", "histogram"),
    ("gateway_prompt_tokens_total", "counter"),
    ("gateway_generated_tokens_total", "counter"),
    ("gateway_batch_size", "histogram"),
    ("gateway_queue_depth", "gauge"),
    ("gateway_requests_in_flight", "gauge"),
    ("gateway_circuit_breaker_state", "gauge"),
    ("gateway_circuit_breaker_transitions_total", "counter"),
    ("gateway_translation_requests_total", "counter"),
    ("gateway_translation_duration_seconds", "histogram"),
    ("gateway_model_info", "gauge"),
]
CONTRACT_GPU_AND_TORCH = [
    "gateway_gpu_memory_used_bytes",
    "gateway_gpu_memory_total_bytes",
    "gateway_gpu_utilization_ratio",
    "gateway_gpu_temperature_celsius",
    "gateway_gpu_power_watts",
    "gateway_torch_memory_allocated_bytes",
    "gateway_torch_memory_reserved_bytes",
]

SNAPSHOT = GaugeSnapshot(model="gpt2", queue_depth=3, queue_capacity=64, in_flight=5, breaker_state=1, workers_alive=1)
INFO = ModelInfo(
    model_id="gpt2", revision="607a30d", task="text-generation", device="cpu", dtype="float32", is_demo=True
)


def exposition_types(registry: CollectorRegistry) -> dict[str, str]:
    """Exposed metric name -> TYPE, read from the text exposition."""
    types = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            types[name] = typ
    return types


def full_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Instruments(registry)
    registry.register(GatewayStateCollector(lambda: [SNAPSHOT], lambda: [INFO]))
    return registry


def test_every_contract_metric_is_exposed_with_its_type() -> None:
    types = exposition_types(full_registry())
    for name, typ in CONTRACT:
        assert types.get(name) == typ, name


def test_gpu_and_torch_names_are_the_contracts() -> None:
    from metrics import instruments

    declared = {
        instruments.GPU_MEMORY_USED,
        instruments.GPU_MEMORY_TOTAL,
        instruments.GPU_UTILIZATION,
        instruments.GPU_TEMPERATURE,
        instruments.GPU_POWER,
        instruments.TORCH_MEMORY_ALLOCATED,
        instruments.TORCH_MEMORY_RESERVED,
    }
    assert declared == set(CONTRACT_GPU_AND_TORCH)


def test_gateway_state_values() -> None:
    text = generate_latest(full_registry()).decode()
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    m = (("model", "gpt2"),)
    assert got[("gateway_queue_depth", m)] == 3
    assert got[("gateway_queue_capacity", m)] == 64
    assert got[("gateway_requests_in_flight", m)] == 5
    assert got[("gateway_circuit_breaker_state", m)] == 1
    assert got[("gateway_workers_alive", m)] == 1
    info_labels = (
        ("device", "cpu"),
        ("dtype", "float32"),
        ("model", "gpt2"),
        ("revision", "607a30d"),
        ("task", "text-generation"),
    )
    assert got[("gateway_model_info", info_labels)] == 1


def test_a_failing_snapshot_drops_only_its_families() -> None:
    def broken() -> list[GaugeSnapshot]:
        raise RuntimeError("bug")

    registry = CollectorRegistry()
    Instruments(registry)
    registry.register(GatewayStateCollector(broken, lambda: [INFO]))
    types = exposition_types(registry)
    assert "gateway_queue_depth" not in types
    assert types["gateway_model_info"] == "gauge"
    assert types["gateway_requests_total"] == "counter"


def test_registering_does_not_call_the_gateway() -> None:
    def must_not_run() -> list[GaugeSnapshot]:
        raise AssertionError("called at registration")

    CollectorRegistry().register(GatewayStateCollector(must_not_run, list))


def test_names_clash_with_a_second_registration() -> None:
    # describe() gives the registry the names, so a double registration fails loudly.
    registry = full_registry()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Instruments(registry)


@pytest.mark.parametrize(
    "buckets",
    [DURATION_BUCKETS, QUEUE_WAIT_BUCKETS, TTFT_BUCKETS],
    ids=["duration", "queue_wait", "ttft"],
)
def test_duration_buckets_span_milliseconds_to_a_minute(buckets: tuple[float, ...]) -> None:
    assert list(buckets) == sorted(set(buckets))
    assert buckets[0] <= 0.005
    assert buckets[-1] >= 60


def test_per_token_and_batch_buckets() -> None:
    assert list(TIME_PER_TOKEN_BUCKETS) == sorted(set(TIME_PER_TOKEN_BUCKETS))
    assert TIME_PER_TOKEN_BUCKETS[0] <= 0.001 and TIME_PER_TOKEN_BUCKETS[-1] >= 1
    assert list(BATCH_SIZE_BUCKETS) == [1, 2, 4, 8, 16, 32, 64, 128, 256]


def test_exposed_buckets_are_the_declared_ones() -> None:
    text = generate_latest(full_registry()).decode()
    assert 'gateway_request_duration_seconds_bucket{le="0.005"' not in text  # no series before an event
    registry = CollectorRegistry()
    inst = Instruments(registry)
    inst.request_duration.labels(route="/generate", model="gpt2").observe(1)
    inst.time_per_output_token.labels(model="gpt2").observe(0.02)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    les = [s.labels["le"] for s in families["gateway_request_duration_seconds"].samples if "le" in s.labels]
    assert [float(le) for le in les] == [*DURATION_BUCKETS, float("inf")]
    les = [s.labels["le"] for s in families["gateway_time_per_output_token_seconds"].samples if "le" in s.labels]
    assert [float(le) for le in les] == [*TIME_PER_TOKEN_BUCKETS, float("inf")]


def test_default_collectors_go_to_the_given_registry() -> None:
    registry = CollectorRegistry()
    register_default_collectors(registry)
    types = exposition_types(registry)
    assert "python_info" in types
    assert "python_gc_objects_collected_total" in types


def test_public_api() -> None:
    public = {
        name for name in dir(metrics) if not name.startswith("_") and not isinstance(getattr(metrics, name), ModuleType)
    }
    assert public == set(metrics.__all__)


def test_import_has_no_side_effects() -> None:
    # A fresh interpreter: this test process has long imported torch and prometheus_client's globals.
    code = (
        "import sys, prometheus_client, metrics;"
        "assert 'torch' not in sys.modules and 'pynvml' not in sys.modules;"
        "names = [n for n in prometheus_client.REGISTRY._names_to_collectors if n.startswith('gateway_')];"
        "assert not names, names"
    )
    src = str(Path(metrics.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
