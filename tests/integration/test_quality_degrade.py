"""Output quality on the real app and demo models: every answer is assessed (flags and a score in the access
log line and in ``/metrics``), normal traffic keeps the rolling score steady, and the ``degrade`` fault, which
makes the real runner answer 200 with one repeated token or nothing, drops it below the threshold while the
circuit breaker stays closed and ``/ready`` stays 200."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.quality_helpers import GEN, PROMPTS, TRANS, access_log, generate
from tests.serving_helpers import clear_fault, metrics, sample, set_fault, sse_events

AppClient = Callable[..., Any]
SCORE = "gateway_output_quality_score"
FLAGS = "gateway_output_flags_total"


async def assert_breaker_closed_and_ready(client: httpx.AsyncClient) -> None:
    r = await client.get("/ready")
    assert r.status_code == 200, r.text
    m = await metrics(client)
    for model in (GEN, TRANS):
        assert sample(m, "gateway_circuit_breaker_state", model=model) == 0
        assert sample(m, "gateway_circuit_breaker_transitions_total", model=model, to_state="open") == 0
        for route in ("/generate", "/generate_stream", "/translate"):
            assert sample(m, "gateway_requests_total", route=route, status="server_error", model=model) == 0


async def test_degrade_route_validation(app_client: AppClient) -> None:
    async with app_client(enable_faults=True, ready=False) as (client, _):
        r = await client.post("/admin/faults", json={"kind": "degrade", "count": 2})
        assert r.status_code == 200
        assert r.json()["fault"] == {
            "kind": "degrade", "remaining": 2, "ratio": None, "seconds": 30.0, "injected": 0, "output": "repeat"
        }  # fmt: skip
        bad = await client.post("/admin/faults", json={"kind": "degrade", "count": 1, "output": "loud"})
        assert bad.status_code == 422 and "output" in bad.json()["error"]


async def test_normal_traffic_is_steady_and_degrade_drops_the_score(
    app_client: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with app_client(enable_faults=True, quality_window=len(PROMPTS)) as (client, _):
        scores = []
        for _ in range(2):
            for prompt in PROMPTS:
                await generate(client, prompt)
            scores.append(sample(await metrics(client), SCORE, model=GEN))
        assert scores[0] == scores[1] >= 0.7, scores  # greedy answers: the same window, the same score
        m = await metrics(client)
        assert sample(m, "gateway_output_evaluations_total", route="/generate", model=GEN) == 40
        assert sample(m, FLAGS, route="/generate", model=GEN, flag="truncated") == 40
        lines = access_log(caplog)
        assert len(lines) == 40
        assert all(line["quality_flags"][-1] == "truncated" and line["quality_score"] > 0.3 for line in lines)
        assert not any("output" in line or "inputs" in line for line in lines)  # no text without payload logging

        await set_fault(client, kind="degrade", ratio=1.0)
        for prompt in PROMPTS:
            tokens = (await generate(client, prompt))["details"]["tokens"]
            assert len({t["id"] for t in tokens}) == 1 and len(tokens) == 20  # one token, repeated
        m = await metrics(client)
        assert sample(m, SCORE, model=GEN) == pytest.approx(0.36)  # every answer of the window: repetition, cut
        assert sample(m, FLAGS, route="/generate", model=GEN, flag="repetition") >= 20
        assert access_log(caplog)[-1]["quality_flags"] == ["repetition", "truncated"]
        await assert_breaker_closed_and_ready(client)

        await clear_fault(client)
        await generate(client, PROMPTS[0])
        assert sample(await metrics(client), SCORE, model=GEN) > 0.36


async def test_degrade_count_limits_the_batches(app_client: AppClient) -> None:
    async with app_client(enable_faults=True) as (client, _):
        normal = (await generate(client, "Hello, my name is", 12))["generated_text"]
        await set_fault(client, kind="degrade", count=1)
        degraded = (await generate(client, "Hello, my name is", 12))["generated_text"]
        assert degraded == degraded[0] * 12 and degraded != normal
        assert (await generate(client, "Hello, my name is", 12))["generated_text"] == normal


@pytest.mark.parametrize("model_process", [False, True], ids=["thread", "model-process"])
async def test_degrade_empty_output(app_client: AppClient, model_process: bool) -> None:
    async with app_client(enable_faults=True, model_process=model_process) as (client, _):
        await set_fault(client, kind="degrade", ratio=1.0, output="empty")
        body = await generate(client, "Hello, my name is")
        assert body["generated_text"] == "" and body["details"]["finish_reason"] == "eos_token"
        request = {"text": ["Good morning", "How are you?"], "source_lang": "en", "target_lang": "de"}
        r = await client.post("/translate", json=request)
        assert r.status_code == 200 and r.json()["translation"] == ["", ""]
        m = await metrics(client)
        assert sample(m, FLAGS, route="/generate", model=GEN, flag="empty") == 1
        assert sample(m, FLAGS, route="/translate", model=TRANS, flag="empty") == 1
        assert sample(m, SCORE, model=GEN) == 0.0 and sample(m, SCORE, model=TRANS) == 0.0
        assert sample(m, "gateway_translation_length_ratio_count", source_lang="en", target_lang="de") == 2
        assert sample(m, "gateway_translation_length_ratio_bucket", source_lang="en", target_lang="de", le="0.1") == 2
        await assert_breaker_closed_and_ready(client)


async def test_degrade_on_translation_and_streams(app_client: AppClient) -> None:
    async with app_client(enable_faults=True) as (client, _):
        await set_fault(client, kind="degrade", ratio=1.0)
        request = {"text": "Good morning, how are you?", "source_lang": "en", "target_lang": "zh"}
        r = await client.post("/translate", json={**request, "parameters": {"max_new_tokens": 16}})
        assert r.status_code == 200, r.text
        text = r.json()["translation"]
        assert len(set(text)) == 1 and len(text) == 16, text
        r = await client.post("/generate_stream", json={"inputs": "Hello", "parameters": {"max_new_tokens": 12}})
        final = sse_events(r.text)[-1]
        assert final["details"]["finish_reason"] == "length" and len(set(final["generated_text"])) == 1
        m = await metrics(client)
        for flag in ("repetition", "truncated", "script_mismatch"):
            assert sample(m, FLAGS, route="/translate", model=TRANS, flag=flag) == 1, flag
        assert sample(m, FLAGS, route="/generate_stream", model=GEN, flag="repetition") == 1
        await assert_breaker_closed_and_ready(client)


async def test_quality_off(app_client: AppClient) -> None:
    async with app_client(quality_enabled=False) as (client, _):
        await generate(client, "Hello")
        m = await metrics(client)
        assert sample(m, "gateway_output_evaluations_total", route="/generate", model=GEN) == 0
        assert (GEN, SCORE) not in {(dict(k[1]).get("model"), k[0]) for k in m}
