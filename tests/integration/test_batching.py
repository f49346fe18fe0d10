"""Dynamic batching through the real app and the real demo models.

To make a batch form deterministically, the worker is held in a one-row batch by the contract's stall fault
while the requests under test queue up; clearing the fault frees it, and the queued requests run as one batch.
Batches are observed in ``/metrics`` (``gateway_batch_size`` count and sum per model).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from gateway.demo import DEMO_SEQ2SEQ_ID
from tests.serving_helpers import (
    GEN,
    batches,
    clear_fault,
    gen,
    hold_worker,
    metrics,
    settle,
    wait_queued,
)

AppClient = Callable[..., Any]

# Prompts of different lengths, so that a shared batch needs (left) padding and attention masks.
PROMPTS = ["Hello", "The quick brown fox jumps over the lazy dog", "a", "Once upon a time, in a land far away"]
# Greedy output of the demo causal model on this prompt ends with EOS after a few tokens.
EOS_PROMPT = "prompt 6 x"


def generated(r: httpx.Response) -> tuple[str, list[int], str]:
    assert r.status_code == 200, r.text
    body = r.json()
    return body["generated_text"], [t["id"] for t in body["details"]["tokens"]], body["details"]["finish_reason"]


async def run_as_one_batch(client: httpx.AsyncClient, app: Any, requests: list[dict[str, Any]]) -> list[httpx.Response]:
    """Queue the requests behind a held worker, free it, and check that they ran as exactly one batch."""
    await settle(app)
    blocker = await hold_worker(client, app)
    before = batches(await metrics(client))
    tasks = [asyncio.ensure_future(client.post("/generate", json=body)) for body in requests]
    await wait_queued(app, len(requests))
    await clear_fault(client)
    answers = list(await asyncio.gather(*tasks))
    assert (await blocker).status_code == 200
    await settle(app)
    after = batches(await metrics(client))
    assert (after[0] - before[0], after[1] - before[1]) == (2, 1 + len(requests)), "blocker + one shared batch"
    return answers


async def test_concurrent_requests_share_batches(app_client: AppClient) -> None:
    async with app_client(enable_faults=True) as (client, app):
        answers = await run_as_one_batch(
            client, app, [{"inputs": f"request {i}", "parameters": {"max_new_tokens": 4}} for i in range(6)]
        )
        assert all(r.status_code == 200 for r in answers)
        # The histogram saw a batch of six: its observations above 4 rows.
        m = await metrics(client)
        key = ("gateway_batch_size_bucket", frozenset({("model", GEN), ("le", "4.0")}))
        assert m[("gateway_batch_size_count", frozenset({("model", GEN)}))] - m[key] == 1


async def test_free_concurrent_load_forms_batches_larger_than_one(app_client: AppClient) -> None:
    # No fault holding the worker: 16 clients at once still end up sharing batches.
    async with app_client(max_batch_wait_ms=20) as (client, app):
        answers = await asyncio.gather(*(gen(client, f"client {i}", max_new_tokens=16) for i in range(16)))
        assert all(r.status_code == 200 for r in answers)
        await settle(app)
        count, rows = batches(await metrics(client))
        assert rows == 16 and count < 16


async def test_results_in_a_shared_batch_equal_the_prompts_run_alone(app_client: AppClient) -> None:
    async with app_client(enable_faults=True) as (client, app):
        bodies = [
            {"inputs": prompt, "parameters": {"max_new_tokens": 12 + 3 * i, "details": True}}
            for i, prompt in enumerate(PROMPTS)
        ]
        alone = []
        for body in bodies:
            alone.append(generated(await client.post("/generate", json=body)))
            await settle(app)
        shared = [generated(r) for r in await run_as_one_batch(client, app, bodies)]
        assert shared == alone
        for (_, ids, reason), body in zip(shared, bodies, strict=True):
            assert (len(ids), reason) == (body["parameters"]["max_new_tokens"], "length")


async def test_each_row_stops_on_its_own_condition_inside_a_batch(app_client: AppClient) -> None:
    async with app_client(enable_faults=True) as (client, app):
        # Alone: a long generation, to pick a stop sequence from, and the prompt that ends with EOS.
        text, _, _ = generated(await gen(client, PROMPTS[1], max_new_tokens=40, details=True))
        stop = text[10:13]
        cut = text[: text.index(stop) + len(stop)]
        eos_text, eos_ids, eos_reason = generated(await gen(client, EOS_PROMPT, max_new_tokens=40, details=True))
        assert eos_reason == "eos_token" and len(eos_ids) < 40

        answers = await run_as_one_batch(
            client,
            app,
            [
                {"inputs": PROMPTS[1], "parameters": {"max_new_tokens": 40, "stop": [stop], "details": True}},
                {"inputs": EOS_PROMPT, "parameters": {"max_new_tokens": 40, "details": True}},
                {"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 3, "details": True}},
                {"inputs": PROMPTS[2], "parameters": {"max_new_tokens": 40, "details": True}},
            ],
        )
        (stop_text, _, stop_reason), (eos_shared, eos_shared_ids, eos_shared_reason), short, long = (
            generated(r) for r in answers
        )
        assert (stop_text, stop_reason) == (cut, "stop_sequence")
        assert (eos_shared, eos_shared_ids, eos_shared_reason) == (eos_text, eos_ids, "eos_token")
        assert (len(short[1]), short[2]) == (3, "length")
        assert (len(long[1]), long[2]) == (40, "length")


async def test_translation_segments_of_one_request_share_a_batch(app_client: AppClient) -> None:
    segments = ["Hello world", "How are you today?", "Good night"]

    async def translate(text: str | list[str]) -> httpx.Response:
        body = {"text": text, "source_lang": "en", "target_lang": "de", "parameters": {"max_new_tokens": 10}}
        return await client.post("/translate", json=body)

    async with app_client() as (client, app):
        alone = []
        for segment in segments:
            r = await translate(segment)
            assert r.status_code == 200, r.text
            alone.append(r.json()["translation"])
        await settle(app)
        before = batches(await metrics(client), DEMO_SEQ2SEQ_ID)
        r = await translate(segments)
        assert r.status_code == 200, r.text
        assert r.json()["translation"] == alone
        await settle(app)
        after = batches(await metrics(client), DEMO_SEQ2SEQ_ID)
        assert (after[0] - before[0], after[1] - before[1]) == (1, len(segments))


async def test_requests_with_different_sampling_settings_do_not_share_a_batch(app_client: AppClient) -> None:
    async with app_client(enable_faults=True) as (client, app):
        await settle(app)
        blocker = await hold_worker(client, app)
        before = batches(await metrics(client))
        params: list[dict[str, Any]] = [
            {"max_new_tokens": 4},
            {"max_new_tokens": 4, "do_sample": True, "seed": 7},
            {"max_new_tokens": 4},
        ]
        tasks = [asyncio.ensure_future(gen(client, f"mixed {i}", **p)) for i, p in enumerate(params)]
        await wait_queued(app, len(tasks))
        await clear_fault(client)
        assert all(r.status_code == 200 for r in await asyncio.gather(*tasks))
        assert (await blocker).status_code == 200
        await settle(app)
        after = batches(await metrics(client))
        # blocker, the two greedy requests together, the sampled one alone
        assert (after[0] - before[0], after[1] - before[1]) == (3, 4)
