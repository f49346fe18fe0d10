"""``POST /generate_stream`` (and ``POST /`` with ``stream: true``): TGI's SSE events, token by token, for
requests that share batches with other streams and with plain requests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from tests.serving_helpers import (
    batches,
    clear_fault,
    hold_worker,
    metrics,
    settle,
    sse_events,
    wait_queued,
)

AppClient = Callable[..., Any]


async def stream(
    client: httpx.AsyncClient, inputs: str, route: str = "/generate_stream", **params: Any
) -> httpx.Response:
    body: dict[str, Any] = {"inputs": inputs, "parameters": params}
    if route == "/":
        body["stream"] = True
    return await client.post(route, json=body)


def check_events(r: httpx.Response) -> tuple[str, list[int], dict[str, Any]]:
    """Check TGI's event shapes; return (text joined from the tokens, token ids, final details)."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in r.text  # the text-generation client fails on it
    events = sse_events(r.text)
    assert [e["index"] for e in events] == list(range(len(events)))
    *tokens, last = events
    for e in tokens:
        assert e["generated_text"] is None and e["details"] is None
        assert set(e["token"]) == {"id", "text", "logprob", "special"}
    assert last["generated_text"] is not None
    assert set(last["details"]) >= {"finish_reason", "generated_tokens", "seed"}
    assert last["details"]["generated_tokens"] == len(events)
    text = "".join(e["token"]["text"] for e in events)
    return text, [e["token"]["id"] for e in events], {"generated_text": last["generated_text"], **last["details"]}


async def test_stream_yields_the_same_text_and_tokens_as_generate(app_client: AppClient) -> None:
    async with app_client() as (client, _):
        for prompt, n in [("Hello", 1), ("Once upon a time", 12), ("The quick brown fox", 30)]:
            plain = await client.post(
                "/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": n, "details": True}}
            )
            assert plain.status_code == 200
            expected = plain.json()
            for route in ("/generate_stream", "/"):
                text, ids, final = check_events(await stream(client, prompt, route, max_new_tokens=n))
                assert text == final["generated_text"] == expected["generated_text"]
                assert ids == [t["id"] for t in expected["details"]["tokens"]]
                assert final["finish_reason"] == expected["details"]["finish_reason"]


async def test_streams_and_plain_requests_share_a_batch(app_client: AppClient) -> None:
    prompts = ["stream one", "a much longer stream prompt than the others", "plain", "x"]
    async with app_client(enable_faults=True) as (client, app):
        alone = []
        for i, prompt in enumerate(prompts):
            r = await client.post("/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": 10 + 4 * i}})
            alone.append(r.json()["generated_text"])
        await settle(app)

        blocker = await hold_worker(client, app)
        before = batches(await metrics(client))
        tasks = [
            asyncio.ensure_future(stream(client, prompts[0], max_new_tokens=10)),
            asyncio.ensure_future(stream(client, prompts[1], max_new_tokens=14)),
            asyncio.ensure_future(
                client.post("/generate", json={"inputs": prompts[2], "parameters": {"max_new_tokens": 18}})
            ),
            asyncio.ensure_future(stream(client, prompts[3], "/", max_new_tokens=22)),
        ]
        await wait_queued(app, len(tasks))
        await clear_fault(client)
        first, second, plain, fourth = await asyncio.gather(*tasks)
        assert (await blocker).status_code == 200
        await settle(app)
        after = batches(await metrics(client))
        assert (after[0] - before[0], after[1] - before[1]) == (2, 5)  # the blocker, then all four together

        streamed = [check_events(r) for r in (first, second, fourth)]
        assert [s[0] for s in streamed] == [alone[0], alone[1], alone[3]]
        assert [len(s[1]) for s in streamed] == [10, 14, 22]
        assert plain.json()["generated_text"] == alone[2]


async def test_stream_ends_on_a_stop_sequence(app_client: AppClient) -> None:
    async with app_client() as (client, _):
        full = (await client.post("/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 30}})).json()
        stop = full["generated_text"][6:9]
        text, _, final = check_events(await stream(client, "Hello", max_new_tokens=30, stop=[stop]))
        assert final["finish_reason"] == "stop_sequence"
        assert text == final["generated_text"]
        assert text.endswith(stop) and full["generated_text"].startswith(text)


async def test_a_deadline_passed_mid_stream_ends_it_with_an_error_event(app_client: AppClient) -> None:
    async with app_client(max_new_tokens_limit=5000) as (client, _):
        r = await stream(client, "a long story", max_new_tokens=4000, timeout_s=0.3)
        assert r.status_code == 200  # the stream had started
        events = sse_events(r.text)
        assert events[-1] == {"error": events[-1]["error"], "error_type": "timeout"}
        assert all("token" in e for e in events[:-1]) and len(events) > 1


async def test_a_deadline_passed_before_the_first_token_is_a_real_504(app_client: AppClient) -> None:
    async with app_client(enable_faults=True) as (client, app):
        blocker = await hold_worker(client, app)
        r = await stream(client, "in a hurry", max_new_tokens=4, timeout_s=0.1)
        assert r.status_code == 504 and r.json()["error_type"] == "timeout"
        await clear_fault(client)
        assert (await blocker).status_code == 200
