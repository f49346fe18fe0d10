"""Hugging Face's own clients against a real `gateway serve` on loopback: `text-generation` (sync and async)
and `huggingface_hub.InferenceClient`, plain and streamed, with details."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from huggingface_hub import InferenceClient
from text_generation import AsyncClient, Client
from text_generation.errors import ValidationError

from bench.gateway_process import ServerProcess, running, start_gateway


@pytest.fixture(scope="module")
def server(demo_cache_dir) -> Iterator[ServerProcess]:
    with running(start_gateway(demo_cache_dir, env={"HF_HUB_OFFLINE": "1"})) as proc:
        yield proc


def test_text_generation_client_generate_and_stream(server):
    client = Client(server.url, timeout=30)
    response = client.generate("Hello", max_new_tokens=8)
    assert response.details.finish_reason.value == "length"
    assert response.details.generated_tokens == 8 == len(response.details.tokens)
    assert response.generated_text == "".join(t.text for t in response.details.tokens)

    streamed = list(client.generate_stream("Hello", max_new_tokens=8))
    assert len(streamed) == 8
    assert all(r.generated_text is None for r in streamed[:-1])
    assert streamed[-1].generated_text == response.generated_text
    assert streamed[-1].details.finish_reason.value == "length"
    assert "".join(r.token.text for r in streamed) == response.generated_text

    seeded = client.generate("Hello", max_new_tokens=6, do_sample=True, seed=5, top_k=10)
    assert seeded.details.seed == 5
    stopped = client.generate("Hello", max_new_tokens=16, stop_sequences=[response.generated_text[2:4]])
    assert stopped.details.finish_reason.value == "stop_sequence"


async def test_text_generation_async_client(server):
    client = AsyncClient(server.url, timeout=30)
    response = await client.generate("Bonjour", max_new_tokens=5)
    chunks = [r async for r in client.generate_stream("Bonjour", max_new_tokens=5)]
    assert chunks[-1].generated_text == response.generated_text
    assert [c.token.id for c in chunks] == [t.id for t in response.details.tokens]


def test_text_generation_client_sees_validation_errors(server):
    client = Client(server.url, timeout=30)
    with pytest.raises(ValidationError, match="watermark"):
        client.generate("Hello", max_new_tokens=4, watermark=True)


def test_inference_client_plain_and_streamed(server):
    client = InferenceClient(model=server.url, timeout=30)
    text = client.text_generation("Hello", max_new_tokens=7)
    assert isinstance(text, str)

    detailed = client.text_generation("Hello", max_new_tokens=7, details=True)
    assert detailed.generated_text == text
    assert detailed.details.finish_reason == "length"
    assert detailed.details.generated_tokens == 7

    tokens = list(client.text_generation("Hello", max_new_tokens=7, stream=True))
    assert "".join(tokens) == text
    events = list(client.text_generation("Hello", max_new_tokens=7, stream=True, details=True))
    assert events[-1].generated_text == text
    assert events[-1].details.finish_reason == "length"

    # A second call still streams: the client did not decide this is "not a TGI server".
    again = list(client.text_generation("Hi", max_new_tokens=3, stream=True))
    assert len(again) == 3
