"""Helpers for the output-quality tests on the real app."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID
from gateway.logs import json_formatter

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


def access_log(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The access-log lines so far, as the gateway's JSON formatter writes them."""
    formatter = json_formatter()
    lines = [json.loads(formatter.format(r)) for r in caplog.records if r.levelno >= logging.INFO]
    return [line for line in lines if line["message"] == "request finished"]
