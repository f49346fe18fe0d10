"""Prometheus metrics of the gateway: instruments bound to a registry passed in, a recorder that turns the
gateway's stats dataclasses into observations, and collectors for values read at scrape time.

Nothing happens at import: build everything with the registry your app owns, for example::

    registry = CollectorRegistry()
    recorder = PrometheusRecorder(Instruments(registry), models=["gpt2"], routes=["/generate"], languages=["en", "zh"])
    registry.register(GatewayStateCollector(gateway.snapshots, gateway.model_infos))
    registry.register(GPUCollector())
    registry.register(TorchMemoryCollector())
    register_default_collectors(registry)
"""

from .collectors import (
    GatewayStateCollector,
    GPUCollector,
    TorchMemoryCollector,
    register_default_collectors,
)
from .health_collector import HealthCollector
from .instruments import (
    BATCH_SIZE_BUCKETS,
    DURATION_BUCKETS,
    QUEUE_WAIT_BUCKETS,
    TIME_PER_TOKEN_BUCKETS,
    TTFT_BUCKETS,
    Instruments,
)
from .process_collector import ModelProcessCollector
from .recorder import PrometheusRecorder, base_language

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "DURATION_BUCKETS",
    "QUEUE_WAIT_BUCKETS",
    "TIME_PER_TOKEN_BUCKETS",
    "TTFT_BUCKETS",
    "GPUCollector",
    "GatewayStateCollector",
    "HealthCollector",
    "Instruments",
    "ModelProcessCollector",
    "PrometheusRecorder",
    "TorchMemoryCollector",
    "base_language",
    "register_default_collectors",
]
