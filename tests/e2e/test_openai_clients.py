"""The real ``openai`` client (sync and async) and ``InferenceClient.chat_completion`` against a real
``gateway serve`` on loopback: plain and streamed answers, ``n``, stop sequences, content parts, usage, and each
error status raising the client's own exception class."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from huggingface_hub import InferenceClient

from bench.gateway_process import ServerProcess, running, start_gateway
from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID

HELLO = [{"role": "user", "content": "Hello"}]
KEY = "e2e-openai-key"


@pytest.fixture(scope="module")
def server(demo_cache_dir: Any) -> Iterator[ServerProcess]:
    with running(start_gateway(demo_cache_dir, env={"HF_HUB_OFFLINE": "1"})) as proc:
        yield proc


@pytest.fixture(scope="module")
def strict(demo_cache_dir: Any) -> Iterator[ServerProcess]:
    """A gateway with a key, strict model names, faults, a queue of one row and short limits."""
    settings = {
        "api_key": KEY,
        "strict_model_names": "true",
        "enable_faults": "true",
        "max_queue": 1,
        "max_batch_size": 1,
        "max_input_tokens": 64,
        "request_timeout_s": 1.5,
        "breaker_failure_threshold": 1,
        "breaker_recovery_s": 60,
    }
    with running(start_gateway(demo_cache_dir, settings, env={"HF_HUB_OFFLINE": "1"})) as proc:
        yield proc


def client(server: ServerProcess, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_models_and_plain_chat(server: ServerProcess) -> None:
    oa = client(server)
    assert [m.id for m in oa.models.list()] == [DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID]
    answer = oa.chat.completions.create(model="anything", messages=HELLO, max_tokens=8, temperature=0)
    assert answer.object == "chat.completion" and answer.model == DEMO_CAUSAL_ID
    (choice,) = answer.choices
    assert choice.message.role == "assistant" and len(choice.message.content or "") > 0
    assert choice.finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 8
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]}]
    same = oa.chat.completions.create(model=DEMO_CAUSAL_ID, messages=parts, max_tokens=8, temperature=0)
    assert same.choices[0].message.content == choice.message.content


def test_streamed_chat_equals_the_plain_answer_with_and_without_usage(server: ServerProcess) -> None:
    oa = client(server)
    plain = oa.chat.completions.create(model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=10, temperature=0)
    text = plain.choices[0].message.content
    for include_usage in (False, True):
        chunks = list(
            oa.chat.completions.create(
                model=DEMO_CAUSAL_ID,
                messages=HELLO,
                max_tokens=10,
                temperature=0,
                stream=True,
                stream_options={"include_usage": include_usage},
            )
        )
        assert chunks[0].choices[0].delta.role == "assistant"
        content = [c for c in chunks if c.choices]
        assert all(c.choices[0].finish_reason is None for c in content[:-1])
        assert content[-1].choices[0].finish_reason == "length"
        assert "".join(c.choices[0].delta.content or "" for c in content) == text
        if include_usage:
            assert chunks[-1].choices == [] and chunks[-1].usage is not None
            assert chunks[-1].usage.completion_tokens == 10
        else:
            assert all(c.choices for c in chunks)


def test_n_and_stop_as_string_and_list(server: ServerProcess) -> None:
    oa = client(server)
    plain = oa.chat.completions.create(model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=12, temperature=0)
    text = plain.choices[0].message.content or ""
    stop = text[3:5]
    assert stop and text.find(stop) == 3
    for given in (stop, [stop, "never-appears"]):
        stopped = oa.chat.completions.create(
            model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=12, temperature=0, stop=given
        )
        assert stopped.choices[0].message.content == text[:3]
        assert stopped.choices[0].finish_reason == "stop"
        streamed = oa.chat.completions.create(
            model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=12, temperature=0, stop=given, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text[:3]
    several = oa.chat.completions.create(model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=6, temperature=0, n=3)
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert {c.message.content for c in several.choices} == {text[:6]}
    assert several.usage is not None and several.usage.completion_tokens == 18
    assert several.usage.prompt_tokens == plain.usage.prompt_tokens  # type: ignore[union-attr]
    sampled = oa.chat.completions.create(model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=6, n=2, stream=True, seed=3)
    finished = [c.choices[0].index for c in sampled if c.choices and c.choices[0].finish_reason]
    assert sorted(finished) == [0, 1]


def test_completions_plain_streamed_and_a_list_of_prompts(server: ServerProcess) -> None:
    oa = client(server)
    plain = oa.completions.create(model=DEMO_CAUSAL_ID, prompt="Once upon", max_tokens=7, temperature=0)
    assert plain.object == "text_completion" and plain.choices[0].finish_reason == "length"
    streamed = oa.completions.create(model=DEMO_CAUSAL_ID, prompt="Once upon", max_tokens=7, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == plain.choices[0].text
    many = oa.completions.create(model=DEMO_CAUSAL_ID, prompt=["Once upon", "Hello"], max_tokens=4, temperature=0, n=2)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.choices[0].text == many.choices[1].text == plain.choices[0].text[:4]


async def test_async_client_plain_and_streamed(server: ServerProcess) -> None:
    oa = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    plain = await oa.chat.completions.create(model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=8, temperature=0)
    stream = await oa.chat.completions.create(
        model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=8, temperature=0, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == plain.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as bad:
        await oa.chat.completions.create(model=DEMO_CAUSAL_ID, messages=[], max_tokens=8)
    assert bad.value.body["param"] == "messages"  # type: ignore[index]
    await oa.close()


def test_inference_client_chat_completion_plain_and_streamed(server: ServerProcess) -> None:
    hf = InferenceClient(base_url=server.url, timeout=30)
    plain = hf.chat_completion(HELLO, max_tokens=8, temperature=0)
    text = plain.choices[0].message.content
    assert text and plain.choices[0].finish_reason == "length"
    streamed = hf.chat_completion(HELLO, max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text


def test_bad_requests_raise_bad_request_error(server: ServerProcess) -> None:
    oa = client(server)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": HELLO, "temperature": 3}, "temperature"),
        ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"messages": HELLO, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"messages": HELLO, "response_format": {"type": "json_object"}}, "response_format"),
    ]
    for fields, param in cases:
        with pytest.raises(openai.BadRequestError) as raised:
            oa.chat.completions.create(model=DEMO_CAUSAL_ID, **fields)
        assert raised.value.body["param"] == param, fields  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as no_template:
        oa.chat.completions.create(model=DEMO_SEQ2SEQ_ID, messages=HELLO, max_tokens=4)
    assert "chat template" in str(no_template.value)


def test_error_statuses_raise_the_clients_own_classes(strict: ServerProcess) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(strict, "wrong").chat.completions.create(model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=4)
    oa = client(strict, KEY)
    with pytest.raises(openai.NotFoundError) as missing:
        oa.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=4)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.APIStatusError) as too_long:
        oa.completions.create(model=DEMO_CAUSAL_ID, prompt="x" * 200, max_tokens=4)
    assert too_long.value.status_code == 413
    asyncio.run(_queue_full(strict))
    admin = httpx.Client(base_url=strict.url, headers={"authorization": f"Bearer {KEY}"}, timeout=10)
    assert admin.post("/admin/faults", json={"kind": "stall", "count": 1, "seconds": 4}).status_code == 200
    with pytest.raises(openai.InternalServerError) as late:
        oa.chat.completions.create(model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=4)
    assert late.value.status_code == 504
    # The deadline passed mid-generation: the breaker (threshold 1) is open now.
    with pytest.raises(openai.InternalServerError) as unavailable:
        oa.chat.completions.create(model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=4)
    assert unavailable.value.status_code == 503 and unavailable.value.code == "circuit_open"
    assert int(unavailable.value.response.headers["retry-after"]) >= 1


async def _queue_full(server: ServerProcess) -> None:
    """One row stalled in the batch of one, one queued: the next request gets 429 with Retry-After."""
    oa = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    async with httpx.AsyncClient(base_url=server.url, headers={"authorization": f"Bearer {KEY}"}) as admin:
        await admin.post("/admin/faults", json={"kind": "stall", "count": 1, "seconds": 1.0})
        first = asyncio.ensure_future(oa.completions.create(model=DEMO_CAUSAL_ID, prompt="a", max_tokens=2))
        await asyncio.sleep(0.3)
        second = asyncio.ensure_future(oa.completions.create(model=DEMO_CAUSAL_ID, prompt="b", max_tokens=2))
        await asyncio.sleep(0.2)
        with pytest.raises(openai.RateLimitError) as full:
            await oa.completions.create(model=DEMO_CAUSAL_ID, prompt="c", max_tokens=2)
        assert full.value.code == "queue_full" and full.value.response.headers["retry-after"]
        assert (await first).choices and (await second).choices
    await oa.close()


def test_logprobs_plain_and_streamed(server: ServerProcess) -> None:
    oa = client(server)
    plain = oa.chat.completions.create(
        model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    )
    content = plain.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 5
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy: the chosen token is the most likely
        assert abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-4
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
    assert "".join(e.token for e in content) == plain.choices[0].message.content
    streamed = oa.chat.completions.create(
        model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3, stream=True
    )
    entries = [e for c in streamed if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content or []]
    assert [(e.token, round(e.logprob, 4)) for e in entries] == [(e.token, round(e.logprob, 4)) for e in content]
    completion = oa.completions.create(model=DEMO_CAUSAL_ID, prompt="Hello", max_tokens=4, temperature=0, logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and len(logprobs.tokens or []) == 4 == len(logprobs.token_logprobs or [])
    assert all(len(top) <= 2 for top in logprobs.top_logprobs or [])


def test_logit_bias_and_penalties_change_the_answer(server: ServerProcess) -> None:
    oa = client(server)
    plain = oa.chat.completions.create(model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=3, temperature=0)
    forced = oa.chat.completions.create(
        model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=3, temperature=0, logit_bias={"70": 100}
    )
    text = forced.choices[0].message.content or ""
    # +100 on one token: it is chosen at every step, whatever the model prefers.
    assert len(text) == 3 and len(set(text)) == 1 and text != plain.choices[0].message.content
    looping = oa.chat.completions.create(model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=24, temperature=0)
    varied = oa.chat.completions.create(
        model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=24, temperature=0, frequency_penalty=2.0, presence_penalty=2.0
    )
    loop, penalised = looping.choices[0].message.content or "", varied.choices[0].message.content or ""
    assert len(set(penalised)) > len(set(loop))
    with pytest.raises(openai.BadRequestError) as outside:
        oa.chat.completions.create(model=DEMO_CAUSAL_ID, messages=HELLO, max_tokens=2, logit_bias={"99999999": 5})
    assert outside.value.body["param"] == "logit_bias"  # type: ignore[index]
