"""Helpers for the quality tests on the real app: HTTP answers turned into quality samples, canary sending."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID
from gateway.quality import OutputSample, Segment
from gateway.quality.canary import CanaryCase
from gateway.quality.canary_runner import CanaryAnswer

GEN = DEMO_CAUSAL_ID
TRANS = DEMO_SEQ2SEQ_ID

# A mix of prompts; the demo model's greedy answers to a quarter of them loop on their own (it has random
# weights), the rest are only cut at max_new_tokens.
PROMPTS = [
    "Hello, my name is", "The capital of France is", "Once upon a time", "def fibonacci(n):", "The weather today",
    "Translate to French: cheese", "My favourite food is", "In 1492, Columbus", "The quick brown fox",
    "Dear Sir or Madam,", "What is the meaning of life?", "Tell me a joke", "Write a haiku about the sea",
    "import numpy as np", "SELECT * FROM", "The best way to learn", "Why is the sky blue?", "List three colours:",
    "Good morning!", "Summarize this text:",
]  # fmt: skip


async def generate(client: httpx.AsyncClient, prompt: str, max_new_tokens: int = 20) -> dict[str, Any]:
    r = await client.post(
        "/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens, "details": True}}
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def generation_sample(body: dict[str, Any]) -> OutputSample:
    details = body["details"]
    ids = [t["id"] for t in details["tokens"]]
    return OutputSample(GEN, "/generate", [Segment(body["generated_text"], ids, details["finish_reason"])])


def translation_sample(request: dict[str, Any], body: dict[str, Any]) -> OutputSample:
    texts = request["text"] if isinstance(request["text"], list) else [request["text"]]
    outputs = body["translation"] if isinstance(body["translation"], list) else [body["translation"]]
    segments = body["details"]["segments"]
    return OutputSample(
        TRANS,
        "/translate",
        [Segment(out, (), seg["finish_reason"], src) for src, out, seg in zip(texts, outputs, segments, strict=True)],
        request["source_lang"],
        request["target_lang"],
    )


class CanaryError(Exception):
    """The gateway answered a canary request with an error."""


def canary_sender(client: httpx.AsyncClient) -> Any:
    """``send`` for ``CanaryRunner``: one canary request through the real app's HTTP routes."""

    async def send(case: CanaryCase) -> CanaryAnswer:
        params = {"max_new_tokens": case.max_new_tokens, "do_sample": False}
        if case.kind == "generate":
            r = await client.post("/generate", json={"inputs": case.text, "parameters": params})
            if r.status_code != 200:
                raise CanaryError(f"{r.status_code} {r.json().get('error_type')}")
            return CanaryAnswer(r.json()["generated_text"], case.model or GEN)
        body = {"text": case.text, "source_lang": case.source_lang, "target_lang": case.target_lang}
        r = await client.post("/translate", json={**body, "parameters": {"max_new_tokens": case.max_new_tokens}})
        if r.status_code != 200:
            raise CanaryError(f"{r.status_code} {r.json().get('error_type')}")
        return CanaryAnswer(r.json()["translation"], r.json()["details"]["model"])

    return send
