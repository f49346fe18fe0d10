"""The real /metrics after real requests: families, types, labels and values; bounded label values."""

from __future__ import annotations

import asyncio
import random
import string
import subprocess
import sys
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID
from tests.serving_helpers import settle

GEN = DEMO_CAUSAL_ID
TRANS = DEMO_SEQ2SEQ_ID


def scrape(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: dict[str, Any], sample_name: str, **labels: str) -> float:
    family = families[sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")]
    matches = [
        s.value
        for s in family.samples
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, (sample_name, labels, [s for s in family.samples if s.name == sample_name])
    return float(matches[0])


def series(families: dict[str, Any]) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(s.name, tuple(sorted(s.labels.items()))) for f in families.values() for s in f.samples}


async def test_catalogue_counts_and_gauges_after_real_requests(app_client):
    async with app_client() as (client, app):
        ok = [client.post("/generate", json={"inputs": f"p{i}", "parameters": {"max_new_tokens": 4}}) for i in range(5)]
        rs = await asyncio.gather(*ok)
        assert all(r.status_code == 200 for r in rs)
        r = await client.post("/generate_stream", json={"inputs": "s", "parameters": {"max_new_tokens": 3}})
        assert r.status_code == 200
        bad = await client.post("/generate", json={"inputs": "x", "parameters": {"top_p": 7}})
        assert bad.status_code == 422
        tr = await client.post("/translate", json={"text": ["a", "b"], "source_lang": "en", "target_lang": "de"})
        assert tr.status_code == 200
        unk = await client.post("/translate", json={"text": "a", "source_lang": "en", "target_lang": "xx"})
        assert unk.status_code == 422
        await settle(app)
        fam = scrape((await client.get("/metrics")).text)

    types = {name: f.type for name, f in fam.items()}
    for name, kind in {
        "gateway_requests": "counter",
        "gateway_request_duration_seconds": "histogram",
        "gateway_queue_wait_seconds": "histogram",
        "gateway_inference_duration_seconds": "histogram",
        "gateway_time_to_first_token_seconds": "histogram",
        "gateway_time_per_output_token_seconds": "histogram",
        "gateway_prompt_tokens": "counter",
        "gateway_generated_tokens": "counter",
        "gateway_batch_size": "histogram",
        "gateway_queue_depth": "gauge",
        "gateway_requests_in_flight": "gauge",
        "gateway_circuit_breaker_state": "gauge",
        "gateway_translation_requests": "counter",
        "gateway_translation_duration_seconds": "histogram",
        "gateway_model_info": "gauge",
        "process_resident_memory_bytes": "gauge",
        "process_open_fds": "gauge",
        "process_cpu_seconds": "counter",
    }.items():
        assert types.get(name) == kind, (name, types.get(name))

    assert value(fam, "gateway_requests_total", route="/generate", status="success", model=GEN) == 5
    assert value(fam, "gateway_requests_total", route="/generate_stream", status="success", model=GEN) == 1
    assert value(fam, "gateway_requests_total", route="/generate", status="client_error", model=GEN) == 1
    assert value(fam, "gateway_requests_total", route="/translate", status="success", model=TRANS) == 1
    assert value(fam, "gateway_requests_total", route="/translate", status="client_error", model=TRANS) == 1
    assert value(fam, "gateway_request_duration_seconds_count", route="/generate", model=GEN) == 6
    assert value(fam, "gateway_inference_duration_seconds_count", model=GEN) == 6
    assert value(fam, "gateway_queue_wait_seconds_count", model=GEN) == 6
    assert value(fam, "gateway_time_to_first_token_seconds_count", model=GEN) == 6
    assert value(fam, "gateway_generated_tokens_total", model=GEN) == 5 * 4 + 3
    assert value(fam, "gateway_prompt_tokens_total", model=GEN) >= 5 * 2 + 1
    batches = value(fam, "gateway_batch_size_count", model=GEN)
    assert 1 <= batches <= 6
    assert value(fam, "gateway_batch_size_sum", model=GEN) == 6  # every row went through exactly one batch
    for model in (GEN, TRANS):
        assert value(fam, "gateway_queue_depth", model=model) == 0
        assert value(fam, "gateway_requests_in_flight", model=model) == 0
        assert value(fam, "gateway_circuit_breaker_state", model=model) == 0
    assert value(fam, "gateway_translation_requests_total", source_lang="en", target_lang="de", status="success") == 1
    assert (
        value(fam, "gateway_translation_requests_total", source_lang="en", target_lang="other", status="client_error")
        == 1
    )
    assert value(fam, "gateway_translation_duration_seconds_count", source_lang="en", target_lang="de") == 1
    info = [s.labels for s in fam["gateway_model_info"].samples]
    assert {i["model"] for i in info} == {GEN, TRANS}
    assert all(set(i) == {"model", "revision", "task", "device", "dtype"} for i in info)
    # No GPU here: the GPU families are absent, not zero.
    assert not any(name.startswith("gateway_gpu_") for name in fam)


async def test_random_language_codes_and_request_ids_add_no_series(app_client):
    rng = random.Random(42)

    def code() -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(2)) + rng.choice(["", "-Hant", "-BR", "-419"])

    async with app_client() as (client, app):
        # Warm up every label combination the traffic below can produce.
        await client.post(
            "/translate",
            json={"text": "w", "source_lang": "en", "target_lang": "de", "parameters": {"max_new_tokens": 1}},
        )
        await settle(app)
        before = series(scrape((await client.get("/metrics")).text))
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> int:
            async with sem:
                body = {"text": "hi", "source_lang": code(), "target_lang": code(), "parameters": {"max_new_tokens": 1}}
                r = await client.post("/translate", json=body, headers={"X-Request-ID": f"rid-{i}-{rng.random()}"})
                return r.status_code

        statuses = await asyncio.gather(*(one(i) for i in range(10_000)))
        await settle(app)
        after_fam = scrape((await client.get("/metrics")).text)
    assert len(statuses) == 10_000 and set(statuses) <= {200, 422}
    after = series(after_fam)
    label_values = {v for _, labels in after for _, v in labels}
    assert not any(v.startswith("rid-") for v in label_values)
    from gateway.languages import LANGUAGE_NAMES

    for family in ("gateway_translation_requests", "gateway_translation_length_ratio"):
        langs = {s.labels[k] for s in after_fam[family].samples for k in ("source_lang", "target_lang")}
        assert langs <= set(LANGUAGE_NAMES) | {"other"}, family
    new = {name for name, _ in after - before}
    # Only series of bounded label sets can appear: the translation families with known codes or "other".
    assert new <= {
        "gateway_translation_requests_total",
        "gateway_translation_requests_created",
        "gateway_translation_duration_seconds_bucket",
        "gateway_translation_duration_seconds_count",
        "gateway_translation_duration_seconds_sum",
        "gateway_translation_duration_seconds_created",
        "gateway_requests_total",
        "gateway_requests_created",
        "gateway_translation_length_ratio_bucket",
        "gateway_translation_length_ratio_count",
        "gateway_translation_length_ratio_sum",
        "gateway_translation_length_ratio_created",
    }
    # Each new series is one (source, target) pair of known codes or "other" in one of those families.
    pairs = {tuple(v for k, v in labels if k in ("source_lang", "target_lang")) for _, labels in after - before}
    assert len(pairs) <= (len(LANGUAGE_NAMES) + 1) ** 2


def test_one_process_per_device_is_enforced():
    """The gateway refuses to run several uvicorn worker processes: each would load its own copy of the model
    and batch on its own queue, defeating batching and multiplying GPU memory; scale with one process per
    device behind a load balancer instead (see README, Metrics)."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--workers", "2"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "one process per device" in proc.stderr
