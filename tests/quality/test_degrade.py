"""The ``degrade`` fault on the real app and demo models: the real runner answers 200 with degenerate output,
the quality evaluator sees it, and neither the circuit breaker nor ``/ready`` moves.

Until the gateway evaluates its own responses (the facade of issue 14), these tests evaluate the real HTTP
answers with the real evaluator and rolling score, the same calls the gateway is to make."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tests.quality.quality_helpers import GEN, PROMPTS, TRANS, generate, generation_sample, translation_sample
from tests.serving_helpers import clear_fault, metrics, sample, set_fault

from gateway.quality import Flag, QualityEvaluator, RollingScores

AppClient = Callable[..., Any]


async def assert_breaker_closed_and_ready(client: httpx.AsyncClient) -> None:
    r = await client.get("/ready")
    assert r.status_code == 200, r.text
    m = await metrics(client)
    for model in (GEN, TRANS):
        assert sample(m, "gateway_circuit_breaker_state", model=model) == 0
        assert sample(m, "gateway_circuit_breaker_transitions_total", model=model, to_state="open") == 0
        assert sample(m, "gateway_requests_total", route="/generate", status="server_error", model=model) == 0


async def test_degrade_route_validation(app_client: AppClient) -> None:
    async with app_client(enable_faults=True, ready=False) as (client, _):
        r = await client.post("/admin/faults", json={"kind": "degrade", "count": 2})
        assert r.status_code == 200
        assert r.json()["fault"] == {
            "kind": "degrade", "remaining": 2, "ratio": None, "seconds": 30.0, "injected": 0, "output": "repeat"
        }  # fmt: skip
        bad = await client.post("/admin/faults", json={"kind": "degrade", "count": 1, "output": "loud"})
        assert bad.status_code == 422 and "output" in bad.json()["error"]


async def test_normal_traffic_is_steady_and_degrade_drops_the_score(app_client: AppClient) -> None:
    evaluator = QualityEvaluator()
    scores = RollingScores(window=len(PROMPTS), threshold=0.7)
    async with app_client(enable_faults=True) as (client, _):
        means = []
        for _ in range(2):
            for prompt in PROMPTS:
                report = evaluator.evaluate(generation_sample(await generate(client, prompt)))
                scores.add(GEN, report.score)
            means.append(scores.mean(GEN))
        assert means[0] == means[1], means  # greedy answers: the same window, the same score
        assert not scores.below_threshold(GEN), means

        await set_fault(client, kind="degrade", ratio=1.0)
        for prompt in PROMPTS:
            body = await generate(client, prompt)
            tokens = body["details"]["tokens"]
            assert len({t["id"] for t in tokens}) == 1 and len(tokens) == 20, body  # one token, repeated
            report = evaluator.evaluate(generation_sample(body))
            assert report.flags == {Flag.REPETITION, Flag.TRUNCATED}
            scores.add(GEN, report.score)
        assert scores.below_threshold(GEN), scores.mean(GEN)
        await assert_breaker_closed_and_ready(client)

        await clear_fault(client)
        body = await generate(client, PROMPTS[0])
        assert not evaluator.evaluate(generation_sample(body)).flags & {Flag.REPETITION}


async def test_degrade_count_limits_the_batches(app_client: AppClient) -> None:
    async with app_client(enable_faults=True) as (client, _):
        normal = (await generate(client, "Hello, my name is", 12))["generated_text"]
        await set_fault(client, kind="degrade", count=1)
        degraded = (await generate(client, "Hello, my name is", 12))["generated_text"]
        assert degraded == degraded[0] * 12 and degraded != normal
        assert (await generate(client, "Hello, my name is", 12))["generated_text"] == normal


@pytest.mark.parametrize("model_process", [False, True], ids=["thread", "model-process"])
async def test_degrade_empty_output(app_client: AppClient, model_process: bool) -> None:
    evaluator = QualityEvaluator()
    async with app_client(enable_faults=True, model_process=model_process) as (client, _):
        await set_fault(client, kind="degrade", ratio=1.0, output="empty")
        body = await generate(client, "Hello, my name is")
        assert body["generated_text"] == "" and body["details"]["finish_reason"] == "eos_token"
        assert evaluator.evaluate(generation_sample(body)).flags == {Flag.EMPTY}

        request = {"text": ["Good morning", "How are you?"], "source_lang": "en", "target_lang": "de"}
        r = await client.post("/translate", json=request)
        assert r.status_code == 200 and r.json()["translation"] == ["", ""]
        report = evaluator.evaluate(translation_sample(request, r.json()))
        assert report.flags == {Flag.EMPTY} and report.score == 0.0
        await assert_breaker_closed_and_ready(client)


async def test_degrade_repeat_on_the_translation_model(app_client: AppClient) -> None:
    evaluator = QualityEvaluator()
    async with app_client(enable_faults=True) as (client, _):
        await set_fault(client, kind="degrade", ratio=1.0)
        request = {"text": "Good morning, how are you?", "source_lang": "en", "target_lang": "zh"}
        r = await client.post("/translate", json={**request, "parameters": {"max_new_tokens": 16}})
        assert r.status_code == 200, r.text
        text = r.json()["translation"]
        assert len(set(text)) == 1 and len(text) == 16, text
        report = evaluator.evaluate(translation_sample(request, r.json()))
        assert Flag.SCRIPT_MISMATCH in report.flags and Flag.TRUNCATED in report.flags
        await assert_breaker_closed_and_ready(client)
