"""Backpressure and deadlines through the real app: 429 on a full queue, 504 when a deadline passes.

The worker is held by the contract's stall fault where a request must wait; a deadline that passes during
generation comes from a long generation (large ``max_new_tokens``) with a short ``parameters.timeout_s``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.serving_helpers import (
    batches,
    clear_fault,
    gen,
    hold_worker,
    metrics,
    requests_by_status,
    scheduler_of,
    settle,
    wait_queued,
    wait_until,
)

AppClient = Callable[..., Any]


async def test_a_full_queue_answers_429_at_once_without_touching_the_model(app_client: AppClient) -> None:
    async with app_client(enable_faults=True, max_queue=2) as (client, app):
        blocker = await hold_worker(client, app)
        queued = [asyncio.ensure_future(gen(client, f"queued {i}")) for i in range(2)]
        await wait_queued(app, 2)
        before = await metrics(client)

        refused = await gen(client, "one too many")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error_type"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-request-id"] == refused.json()["request_id"]
        # Streams are refused the same way, with a real status rather than an error event.
        stream = await client.post("/generate_stream", json={"inputs": "stream", "parameters": {"max_new_tokens": 2}})
        assert stream.status_code == 429 and stream.json()["error_type"] == "queue_full"

        after = await metrics(client)
        assert requests_by_status(after, "rejected") - requests_by_status(before, "rejected") == 1
        assert batches(after) == batches(before)  # no batch ran for them
        assert scheduler_of(app).queue.depth == 2

        await clear_fault(client)
        assert [r.status_code for r in await asyncio.gather(blocker, *queued)] == [200, 200, 200]
        # Room again once the queue drains.
        assert (await gen(client, "later")).status_code == 200


async def test_a_full_queue_sheds_before_parsing_but_after_the_key_and_not_while_draining(
    app_client: AppClient,
) -> None:
    # The middleware answers 429 from the path alone while the queue is full (no routing, parsing or
    # validation); it must not change what a caller with a wrong key, or a draining gateway, answers.
    async with app_client(enable_faults=True, max_queue=1, api_key="s3cret") as (client, app):
        client.headers["Authorization"] = "Bearer s3cret"
        blocker = await hold_worker(client, app)
        queued = asyncio.ensure_future(gen(client, "queued"))
        await wait_queued(app, 1)

        # Whatever the body: the queue has no room for it.
        for body in (b"{not json", b'{"inputs": ""}', b'{"inputs": "fine"}'):
            r = await client.post("/generate", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 429 and r.json()["error_type"] == "queue_full", r.text
            assert r.headers["retry-after"] == "1"
        # Another model's queue has room.
        r = await client.post("/translate", json={"text": "Hi", "source_lang": "en", "target_lang": "de"})
        assert r.status_code == 200, r.text
        # A wrong key is still a 401, and a GET still a 405.
        r = await client.post("/generate", json={"inputs": "x"}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401, r.text
        assert (await client.get("/generate")).status_code == 405
        # Draining: 503 as the route says, not 429.
        app.gateway.engine.begin_drain()
        r = await client.post("/generate", json={"inputs": "x"})
        assert r.status_code == 503 and r.json()["error_type"] == "draining", r.text

        await clear_fault(client)
        assert [r.status_code for r in await asyncio.gather(blocker, queued)] == [200, 200]


async def test_a_deadline_passed_in_the_queue_gets_504_and_is_never_computed(app_client: AppClient) -> None:
    async with app_client(enable_faults=True) as (client, app):
        blocker = await hold_worker(client, app)
        before = await metrics(client)
        late = await gen(client, "in a hurry", timeout_s=0.1)
        assert late.status_code == 504, late.text
        assert late.json()["error_type"] == "timeout"

        await clear_fault(client)
        assert (await blocker).status_code == 200
        await settle(app)
        after = await metrics(client)
        assert requests_by_status(after, "timeout") - requests_by_status(before, "timeout") == 1
        # Only the blocker's batch ran: the expired request was dropped before compute.
        assert (batches(after)[0] - batches(before)[0], batches(after)[1] - batches(before)[1]) == (1, 1)


async def test_a_deadline_passed_during_generation_stops_the_row_and_gets_504(app_client: AppClient) -> None:
    async with app_client(max_new_tokens_limit=5000) as (client, app):
        before = await metrics(client)
        # Thousands of tokens would take many seconds; the deadline stops the row after a fraction of one.
        late = await gen(client, "a long story", max_new_tokens=4000, timeout_s=0.3)
        assert late.status_code == 504, late.text
        assert late.json()["error_type"] == "timeout"
        # The runner dropped the row at its deadline, so the batch ends and the worker is free for the next one.
        scheduler = scheduler_of(app)
        await wait_until(lambda: scheduler.running_rows == 0, timeout_s=5, what="the batch to stop")
        after = await metrics(client)
        assert batches(after)[1] - batches(before)[1] == 1
        assert requests_by_status(after, "timeout") - requests_by_status(before, "timeout") == 1
        assert (await gen(client, "next", max_new_tokens=4)).status_code == 200


async def test_only_the_row_whose_deadline_passed_stops_in_a_shared_batch(app_client: AppClient) -> None:
    async with app_client(enable_faults=True, max_new_tokens_limit=5000) as (client, app):
        blocker = await hold_worker(client, app, timeout_s=30)
        hurried = asyncio.ensure_future(gen(client, "hurried", max_new_tokens=4000, timeout_s=1.0))
        patient = asyncio.ensure_future(gen(client, "patient", max_new_tokens=40, details=True))
        await wait_queued(app, 2)
        await clear_fault(client)
        assert (await blocker).status_code == 200
        late, done = await asyncio.gather(hurried, patient)
        assert late.status_code == 504 and late.json()["error_type"] == "timeout"
        assert done.status_code == 200 and done.json()["details"]["generated_tokens"] == 40


async def test_timeout_s_is_bounded_by_the_configured_maximum(app_client: AppClient) -> None:
    async with app_client(request_timeout_s=5, max_request_timeout_s=10) as (client, _):
        r = await gen(client, timeout_s=11)
        assert r.status_code == 422 and "timeout_s" in r.json()["error"]
        assert (await gen(client, timeout_s=10)).status_code == 200
