"""The OpenAI routes on the real app: bad bodies get 400 in OpenAI's error shape naming the field (never a 500,
never a move of the breaker), one log line and the request series per route, keep-alive comments while a
stream waits, and an error as the last event of a stream that fails after it started."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.demo import DEMO_CAUSAL_ID
from tests.serving_helpers import metrics, sample

HELLO = [{"role": "user", "content": "Hello"}]
CHAT = "/v1/chat/completions"

BAD_CHAT_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"model": "m", "messages": [{"content": "x"}]}, "messages.0.role"),
    ({"model": "m", "messages": "Hello"}, "messages"),
    ({"messages": HELLO}, "model"),
    ({"model": "m", "messages": HELLO, "max_tokens": "5"}, "max_tokens"),
    ({"model": "m", "messages": HELLO, "max_tokens": True}, "max_tokens"),
    ({"model": "m", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": HELLO, "max_tokens": 100_000}, "max_tokens"),
    ({"model": "m", "messages": HELLO, "max_completion_tokens": -1}, "max_completion_tokens"),
    ({"model": "m", "messages": HELLO, "temperature": 2.5}, "temperature"),
    ({"model": "m", "messages": HELLO, "temperature": "hot"}, "temperature"),
    ({"model": "m", "messages": HELLO, "top_p": 0}, "top_p"),
    ({"model": "m", "messages": HELLO, "n": 0}, "n"),
    ({"model": "m", "messages": HELLO, "n": 1000}, "n"),
    ({"model": "m", "messages": HELLO, "stop": [""]}, "stop"),
    ({"model": "m", "messages": HELLO, "stop": ["x"] * 100}, "stop"),
    ({"model": "m", "messages": HELLO, "seed": -1}, "seed"),
    ({"model": "m", "messages": HELLO, "presence_penalty": 3}, "presence_penalty"),
    ({"model": "m", "messages": HELLO, "frequency_penalty": -3}, "frequency_penalty"),
    ({"model": "m", "messages": HELLO, "logit_bias": {"abc": 1}}, "logit_bias"),
    ({"model": "m", "messages": HELLO, "logit_bias": {"5": 1000}}, "logit_bias.5"),
    ({"model": "m", "messages": HELLO, "top_logprobs": 3}, "top_logprobs"),
    ({"model": "m", "messages": HELLO, "top_logprobs": 99, "logprobs": True}, "top_logprobs"),
    ({"model": "m", "messages": HELLO, "stream": "yes"}, "stream"),
    ({"model": "m", "messages": HELLO, "tools": [{"type": "function"}]}, "tools"),
    ({"model": "m", "messages": HELLO, "tool_choice": "required"}, "tool_choice"),
    ({"model": "m", "messages": HELLO, "response_format": {"type": "json_schema"}}, "response_format"),
    ({"model": "m", "messages": HELLO, "audio": {"voice": "x"}}, "audio"),
]


def assert_openai_error(body: dict[str, Any], param: str | None) -> None:
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    assert error["param"] == param and error["message"]


@pytest.mark.parametrize(("body", "param"), BAD_CHAT_BODIES)
async def test_bad_chat_bodies_get_400_naming_the_field(app_client, body, param):
    async with app_client() as (client, _):
        r = await client.post(CHAT, json=body)
        assert r.status_code == 400, r.text
        assert_openai_error(r.json(), param)
        assert r.headers["x-request-id"]
        m = await metrics(client)
        assert sample(m, "gateway_circuit_breaker_state", model=DEMO_CAUSAL_ID) == 0
        assert sample(m, "gateway_requests_total", route=CHAT, status="client_error", model=DEMO_CAUSAL_ID) == 1


async def test_bad_completion_bodies_and_paths(app_client):
    async with app_client() as (client, _):
        cases = [
            ({"model": "m", "prompt": ""}, "prompt"),
            ({"model": "m", "prompt": []}, "prompt"),
            ({"model": "m", "prompt": ["a", ""]}, "prompt"),
            ({"model": "m", "prompt": "a", "logprobs": 9}, "logprobs"),
            ({"model": "m", "prompt": "a", "echo": True}, "echo"),
        ]
        for body, param in cases:
            r = await client.post("/v1/completions", json=body)
            assert r.status_code == 400, (body, r.text)
            assert_openai_error(r.json(), param)
        r = await client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation"
        r = await client.get("/v1/nothing-here")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = await client.get(CHAT)
        assert r.status_code == 405 and "error" in r.json()
        # Unknown extra fields are ignored, as vLLM does.
        r = await client.post("/v1/completions", json={"model": "m", "prompt": "a", "max_tokens": 2, "x_new": 1})
        assert r.status_code == 200, r.text


async def test_route_series_and_one_log_line_without_the_user(app_client, access_log):
    async with app_client() as (client, _):
        body = {"model": "m", "messages": HELLO, "max_tokens": 3, "temperature": 0, "user": "alice@example.com"}
        r = await client.post(CHAT, json=body, headers={"X-Request-ID": "oa-1"})
        assert r.status_code == 200 and r.json()["id"] == "chatcmpl-oa-1"
        r = await client.post("/v1/completions", json={"model": "m", "prompt": "Hi", "max_tokens": 2})
        assert r.status_code == 200
        m = await metrics(client)
    assert sample(m, "gateway_requests_total", route=CHAT, status="success", model=DEMO_CAUSAL_ID) == 1
    assert sample(m, "gateway_requests_total", route="/v1/completions", status="success", model=DEMO_CAUSAL_ID) == 1
    line = next(x for x in access_log() if x["request_id"] == "oa-1")
    assert line["route"] == CHAT and line["status"] == "success" and line["generated_tokens"] == 3
    assert line["model"] == DEMO_CAUSAL_ID and line["finish_reason"] == "length"
    assert "alice" not in json.dumps(access_log())


async def test_a_waiting_stream_sends_keepalive_comments(app_client):
    async with app_client(enable_faults=True, sse_keepalive_s=0.1) as (client, _):
        await client.post("/admin/faults", json={"kind": "stall", "count": 1, "seconds": 0.6})
        body = {"model": "m", "messages": HELLO, "max_tokens": 3, "temperature": 0, "stream": True}
        async with client.stream("POST", CHAT, json=body) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = [line async for line in r.aiter_lines() if line]
    assert lines.count(": keep-alive") >= 2
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_a_stream_that_fails_ends_with_an_error_event_then_done(app_client):
    async with app_client(enable_faults=True) as (client, _):
        await client.post("/admin/faults", json={"kind": "error", "count": 1})
        body = {"model": "m", "messages": HELLO, "max_tokens": 3, "temperature": 0, "stream": True}
        async with client.stream("POST", CHAT, json=body) as r:
            status = r.status_code
            lines = [line async for line in r.aiter_lines() if line]
    if status == 200:  # the fault met the row after the stream started: the error is its last event
        error = json.loads(lines[-2][6:])
        assert lines[-1] == "data: [DONE]"
    else:
        error = json.loads(lines[0])
        assert status == 500
    assert error["error"]["code"] == "model_error" and error["error"]["type"] == "server_error"
