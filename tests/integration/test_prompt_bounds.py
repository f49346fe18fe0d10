"""A request's work stays bounded by its size before the costly step: tokenizing.

A prompt of more characters than the token limit can hold is refused (413) without being tokenized, and the event
loop keeps answering meanwhile; with ``truncate`` only the prompt's tail is tokenized, and the kept tokens are the
whole prompt's. The worst ``/health`` latency while the large prompts are handled is printed (``-s``), never asserted.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.serving_helpers import GEN

AppClient = Callable[..., Any]
BIG = 990_000  # characters: a prompt that fits the default 1 MB body


async def _health_worst_s(client: httpx.AsyncClient, work: Any) -> tuple[Any, float]:
    """Run ``work`` while polling ``/health``; its result and the slowest ``/health`` answer meanwhile (from when
    it was due: a loop busy tokenizing delays the poll's wake-up, not the in-process request itself)."""
    task = asyncio.ensure_future(work)
    worst = 0.0
    while not task.done():
        due = time.perf_counter() + 0.005
        await asyncio.sleep(0.005)
        assert (await client.get("/health")).status_code == 200
        worst = max(worst, time.perf_counter() - due)
    return await task, worst


async def test_a_prompt_over_the_character_bound_is_refused_before_tokenizing(app_client: AppClient) -> None:
    async with app_client() as (client, app):
        prompt = "hello world " * (BIG // 12)
        posts = [client.post("/generate", json={"inputs": prompt}) for _ in range(5)]
        answers, worst = await _health_worst_s(client, asyncio.gather(*posts))
        print(f"\n  5 x {len(prompt)} characters: /health worst {worst * 1000:.1f} ms")
        for r in answers:
            assert r.status_code == 413, r.text
            assert r.json()["error_type"] == "payload_too_large"
            # The bound on characters answered, not a token count: the prompt was never tokenized.
            assert f"the prompt has {len(prompt)} characters" in r.json()["error"]
        assert app.gateway.engine.services[GEN].scheduler.queue.depth == 0
        assert (await client.post("/generate", json={"inputs": "short"})).status_code == 200


async def test_with_truncate_a_huge_prompt_is_served_from_its_tail(app_client: AppClient) -> None:
    async with app_client() as (client, _):
        prompt = "hello world " * (BIG // 12)
        body = {"inputs": prompt, "parameters": {"truncate": 50, "max_new_tokens": 2, "details": True}}
        r, worst = await _health_worst_s(client, client.post("/generate", json=body))
        print(f"\n  truncate 50 of {len(prompt)} characters: /health worst {worst * 1000:.1f} ms")
        assert r.status_code == 200, r.text
        assert r.json()["details"]["prompt_tokens"] == 50


async def test_the_tail_keeps_the_whole_prompts_tokens(app_client: AppClient) -> None:
    rng = random.Random(19)
    words = ["hello", "world", "über", "naïve", "日本語", "tokens", "  ", "\n", "x" * 30, "emoji 🙂", "the", "a"]
    async with app_client() as (_, app):
        service = app.gateway.engine.services[GEN]
        encode = service.runner.encode
        for size in (100, 3000, 20_000):
            prompt = " ".join(rng.choice(words) for _ in range(size))
            whole = encode(prompt)
            for truncate in (1, 7, 64, 1000, 5000):
                if truncate > len(whole) or min(truncate, len(whole)) > service.limits.max_input_tokens:
                    continue
                assert await service._tokens(prompt, truncate, encode) == whole[-truncate:], (size, truncate)


async def test_a_truncate_over_the_limit_is_still_refused(app_client: AppClient) -> None:
    async with app_client(max_input_tokens=16) as (client, _):
        prompt = "hello world " * 1000
        r = await client.post("/generate", json={"inputs": prompt, "parameters": {"truncate": 100}})
        assert r.status_code == 413, r.text
        assert "tokens; the limit is 16" in r.json()["error"]
        r = await client.post("/generate", json={"inputs": prompt, "parameters": {"truncate": 16, "max_new_tokens": 2}})
        assert r.status_code == 200, r.text
