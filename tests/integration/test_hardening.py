"""Small holes found by probing the app as an attacker would, each closed and kept closed.

- The trailing-slash redirect built its ``Location`` from the ``Host`` header (an open redirect): now no redirect.
- ``"5"`` and ``true`` were coerced to integers (and ``1`` to a boolean) in TGI's and /translate's bodies.
- ``/admin/faults`` answered a chunked body over the size limit with 400 (FastAPI's "error parsing the body").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

AppClient = Callable[..., Any]


async def test_a_trailing_slash_is_not_redirected_to_the_host_header(app_client: AppClient) -> None:
    async with app_client() as (client, _):
        for method, path in [("POST", "/generate/"), ("POST", "/v1/chat/completions/"), ("GET", "/health/")]:
            r = await client.request(
                method, path, json={"inputs": "hi"}, headers={"Host": "evil.example"}, follow_redirects=False
            )
            assert r.status_code == 404, (path, r.status_code, r.headers)
            assert "location" not in r.headers
            assert "evil.example" not in r.text


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/generate", {"inputs": "hi", "parameters": {"max_new_tokens": "5"}}, "parameters.max_new_tokens"),
        ("/generate", {"inputs": "hi", "parameters": {"max_new_tokens": True}}, "parameters.max_new_tokens"),
        ("/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 5.0}}, "parameters.max_new_tokens"),
        ("/generate", {"inputs": "hi", "parameters": {"seed": "7"}}, "parameters.seed"),
        ("/generate", {"inputs": "hi", "parameters": {"top_k": False}}, "parameters.top_k"),
        ("/generate", {"inputs": "hi", "parameters": {"details": 1}}, "parameters.details"),
        ("/generate", {"inputs": "hi", "parameters": {"do_sample": "true"}}, "parameters.do_sample"),
        ("/generate", {"inputs": "hi", "parameters": {"temperature": "0.5"}}, "parameters.temperature"),
        ("/generate", {"inputs": 5}, "inputs"),
        ("/", {"inputs": "hi", "stream": 1}, "stream"),
        ("/generate_stream", {"inputs": "hi", "parameters": {"truncate": "3"}}, "parameters.truncate"),
        (
            "/translate",
            {"text": "hi", "source_lang": "en", "target_lang": "de", "parameters": {"max_new_tokens": "4"}},
            "parameters.max_new_tokens",
        ),
        (
            "/translate",
            {"text": "hi", "source_lang": "en", "target_lang": "de", "parameters": {"do_sample": 0}},
            "parameters.do_sample",
        ),
    ],
)
async def test_strings_and_booleans_are_not_coerced(app_client: AppClient, path: str, body: Any, field: str) -> None:
    async with app_client() as (client, _):
        r = await client.post(path, json=body)
        assert r.status_code == 422, r.text
        assert r.json()["error_type"] == "validation"
        assert field in r.json()["error"]


async def test_integers_still_count_as_floats(app_client: AppClient) -> None:
    async with app_client() as (client, _):
        r = await client.post("/generate", json={"inputs": "hi", "parameters": {"temperature": 1, "max_new_tokens": 2}})
        assert r.status_code == 200, r.text
        body = {"text": "hi", "source_lang": "en", "target_lang": "de", "parameters": {"temperature": 1}}
        assert (await client.post("/translate", json=body)).status_code == 200


async def test_an_oversized_chunked_body_on_admin_faults_gets_413(app_client: AppClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"kind": "error", "count": 1, "pad": "'
        for _ in range(8):
            yield b"x" * 512
        yield b'"}'

    async with app_client(enable_faults=True, max_body_bytes=2048) as (client, _):
        r = await client.post("/admin/faults", content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers
        assert r.status_code == 413, r.text
        assert r.json()["error_type"] == "payload_too_large"
        # Nothing was set: a request still succeeds.
        ok = await client.post("/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 2}})
        assert ok.status_code == 200
