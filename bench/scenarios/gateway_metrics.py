"""The gateway's ``/metrics``: the batch-size series read around a window, and the scrape itself timed.

Metric names come from ``metrics.instruments``, the gateway's catalogue, so a renamed series is renamed here too.
"""

from __future__ import annotations

import time

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from bench.systems import System
from metrics import instruments


def exposed_name(metric: MetricWrapperBase) -> str:
    """The name ``metric`` is exposed under (a counter's with its ``_total``)."""
    (family,) = metric.describe()
    name = str(family.name)
    return name + "_total" if family.type == "counter" else name


def contract_series() -> tuple[str, ...]:
    """The series of the contract's catalogue that exist on every machine (the GPU and torch memory gauges
    need a GPU)."""
    inst = instruments.Instruments(CollectorRegistry())
    event = (
        inst.requests,
        inst.request_duration,
        inst.queue_wait,
        inst.inference_duration,
        inst.time_to_first_token,
        inst.time_per_output_token,
        inst.prompt_tokens,
        inst.generated_tokens,
        inst.batch_size,
    )
    return (
        *(exposed_name(m) for m in event),
        instruments.QUEUE_DEPTH,
        instruments.REQUESTS_IN_FLIGHT,
        instruments.CIRCUIT_BREAKER_STATE,
        exposed_name(inst.translation_requests),
        exposed_name(inst.translation_duration),
        instruments.MODEL_INFO,
    )


def batch_size_series() -> str:
    """The name of the histogram of rows per generate call."""
    return exposed_name(instruments.Instruments(CollectorRegistry()).batch_size)


async def metric_values(client: httpx.AsyncClient) -> dict[str, float]:
    """Every sample of one scrape, by its series (name and labels as exposed)."""
    text = (await client.get("/metrics")).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def batch_stats(before: dict[str, float], after: dict[str, float], model: str, series: str) -> tuple[int, float]:
    """(batches, mean batch size) of ``model`` between two scrapes; ``series`` is ``batch_size_series()``."""
    label = f'{{model="{model}"}}'
    count = after.get(f"{series}_count{label}", 0) - before.get(f"{series}_count{label}", 0)
    rows = after.get(f"{series}_sum{label}", 0) - before.get(f"{series}_sum{label}", 0)
    return int(count), (rows / count if count else 0.0)


async def scrape_metrics(system: System, n: int = 50) -> tuple[list[float], list[str]]:
    """(seconds of each of ``n`` scrapes, contract series missing from the last one), after one translation
    so that the translation series have a sample."""
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as client:
        await client.post("/translate", json={"text": "Hello", "source_lang": "en", "target_lang": "de"})
        times = []
        text = ""
        for _ in range(n):
            started = time.perf_counter()
            r = await client.get("/metrics")
            times.append(time.perf_counter() - started)
            text = r.text
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    # Counters are declared without their ``_total`` suffix in TYPE lines by some exposition formats.
    missing = [s for s in contract_series() if s not in families and s.removesuffix("_total") not in families]
    return times, missing
