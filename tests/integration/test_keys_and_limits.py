"""Named keys, deny by default, and per-key rate limits through the real app on the demo models.

The route list comes from the app itself (``app.routes``, every method of each), so a route added later is checked
without touching this file. Limits run on the default ``memory://`` storage; Redis is in tests/e2e.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts

from gateway.breaker import BreakerState
from tests.serving_helpers import GEN, clear_fault, gen, hold_worker, metrics, sample, set_fault

AppClient = Callable[..., Any]
KEYS = {"probe": "probe-secret-1", "rpm": "rpm-secret-2", "tok": "tok-secret-3", "conc": "conc-secret-4"}
TPM = 200


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    limits: dict[str, dict[str, int]] = {
        "probe": {},
        "rpm": {"requests_per_minute": 2},
        "tok": {"tokens_per_minute": TPM},
        "conc": {"max_concurrent": 1},
    }
    entries = [
        {"name": name, "sha256": hashlib.sha256(KEYS[name].encode()).hexdigest(), **limits[name]} for name in KEYS
    ]
    path = tmp_path / "keys.yaml"
    path.write_text(json.dumps(entries))  # JSON is YAML
    return path


def every_route(app: Any) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app has, each method of each (HEAD with GET, as Starlette adds it)."""
    for route in iter_route_contexts(app.routes):  # included routers flattened
        for method in sorted(route.methods or ()):
            assert route.path is not None
            yield method, route.path.replace("{", "").replace("}", "")


async def test_every_route_needs_a_key_except_the_public_ones(app_client: AppClient, key_file: Path) -> None:
    async with app_client(api_keys_file=key_file, api_key="single-key", enable_faults=True) as (client, app):
        routes = list(every_route(app))
        paths = {path for _, path in routes}
        assert {"/generate", "/", "/v1/models", "/metrics", "/docs", "/openapi.json", "/admin/faults"} <= paths
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": "x"}):
                r = await client.request(method, path, headers=headers)
                if path in ("/health", "/ready"):
                    assert r.status_code == 200, (method, path, r.status_code)
                    continue
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert r.headers["www-authenticate"].startswith("Bearer")
                if method != "HEAD":
                    body = r.json()
                    kind = body["error"]["code"] if path.startswith("/v1/") else body["error_type"]
                    assert kind == "unauthorized", (method, path, body)
        # A path that does not exist is a 401 too: without a key the route list does not show.
        for method, path in (("GET", "/nope"), ("POST", "/admin/other"), ("GET", "/health/"), ("GET", "/docs/")):
            assert (await client.request(method, path)).status_code == 401, path
        # With a key (either header, any of the keys), the same routes answer as they would without keys.
        assert (await client.get("/nope", headers=bearer("probe"))).status_code == 404
        for headers in (bearer("probe"), {"X-API-Key": "single-key"}, {"authorization": "bearer  probe-secret-1 "}):
            for path in ("/info", "/metrics", "/docs", "/openapi.json", "/v1/models"):
                r = await client.get(path, headers=headers)
                assert r.status_code == 200, (path, r.status_code)
        r = await client.delete("/admin/faults", headers=bearer("probe"))
        assert r.status_code == 200

        client.headers.update(bearer("probe"))
        m = await metrics(client)
        # Four refusals per method of each route; paths outside the app's routes (/health/ too) as "other".
        assert sample(m, "gateway_auth_failures_total", route="/generate") == 4
        assert sample(m, "gateway_auth_failures_total", route="/admin/faults") == 8  # POST and DELETE
        assert sample(m, "gateway_auth_failures_total", route="other") == 4
        assert sample(m, "gateway_auth_failures_total", route="/health") == 0


async def test_the_openapi_document_declares_the_key(app_client: AppClient, key_file: Path) -> None:
    async with app_client(api_keys_file=key_file) as (client, _):
        doc = (await client.get("/openapi.json", headers=bearer("probe"))).json()
        assert set(doc["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}
        either = [{"bearerAuth": []}, {"apiKeyHeader": []}]
        assert doc["paths"]["/generate"]["post"]["security"] == either
        assert doc["paths"]["/v1/models"]["get"]["security"] == either
        assert doc["paths"]["/health"]["get"]["security"] == []
    async with app_client() as (client, _):
        doc = (await client.get("/openapi.json")).json()  # no key configured: nothing to declare
        assert "securitySchemes" not in doc.get("components", {})


async def test_public_routes_are_a_setting(app_client: AppClient) -> None:
    async with app_client(api_key="k", public_routes="/health,/ready,/metrics") as (client, _):
        assert (await client.get("/metrics")).status_code == 200  # a Prometheus without a bearer token
        assert (await client.get("/info")).status_code == 401
    async with app_client(api_key="k", public_routes="", ready=False) as (client, _):
        assert (await client.get("/health")).status_code == 401  # nothing public: even the probes need the key
        assert (await client.get("/health", headers={"X-API-Key": "k"})).status_code == 200


async def test_requests_per_minute_429_with_headers_named_in_log_and_metrics_and_never_the_breaker(
    app_client: AppClient, key_file: Path, access_log: Callable[[], list[dict[str, Any]]]
) -> None:
    async with app_client(api_keys_file=key_file, breaker_failure_threshold=1) as (client, app):
        client.headers.update(bearer("rpm"))
        assert [(await gen(client, "hi", max_new_tokens=2)).status_code for _ in range(2)] == [200, 200]
        assert (await client.get("/info")).status_code == 200  # only inference counts against the rate

        refused = await gen(client, "hi", max_new_tokens=2)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error_type"] == "rate_limited" and "requests limit" in refused.json()["error"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["ratelimit-limit"] == "2" and refused.headers["ratelimit-remaining"] == "0"
        assert refused.headers["ratelimit-reset"] == refused.headers["retry-after"]
        # A stream gets the real status, not an error event; the OpenAI routes answer in OpenAI's shape.
        stream = await client.post("/generate_stream", json={"inputs": "hi", "parameters": {"max_new_tokens": 2}})
        assert stream.status_code == 429 and stream.json()["error_type"] == "rate_limited"
        openai = await client.post("/v1/completions", json={"model": "x", "prompt": "hi", "max_tokens": 2})
        assert openai.status_code == 429
        assert openai.json()["error"]["type"] == "rate_limit_error" and openai.json()["error"]["code"] == "rate_limited"
        # Still refused; another key is not affected.
        assert (await gen(client, "hi", max_new_tokens=2)).status_code == 429
        assert (await client.post("/generate", json={"inputs": "hi"}, headers=bearer("probe"))).status_code == 200

        # 429s never move the breaker (its threshold is one failure here).
        assert app.gateway.engine.services[GEN].breaker.state is BreakerState.CLOSED
        assert (await client.get("/ready")).status_code == 200
        m = await metrics(client)
        assert sample(m, "gateway_rate_limited_total", key="rpm", limit="requests") == 4
        assert sample(m, "gateway_rate_limited_total", key="probe", limit="requests") == 0
        assert sample(m, "gateway_requests_total", route="/generate", status="rejected", model=GEN) == 2

    lines = access_log()
    limited = [line for line in lines if line.get("error_type") == "rate_limited"]
    assert len(limited) == 4 and {line["key"] for line in limited} == {"rpm"}
    assert {line["key"] for line in lines if line["route"] == "/generate" and line["status_code"] == 200} == {
        "rpm",
        "probe",
    }
    text = json.dumps(lines)
    assert not any(secret in text for secret in KEYS.values())  # names, never keys


async def test_tokens_are_charged_at_admission_and_corrected_with_what_was_generated(
    app_client: AppClient, key_file: Path
) -> None:
    async with app_client(api_keys_file=key_file, enable_faults=True) as (client, _):
        # What greedy decoding of the prompt gives, to pick a stop sequence that ends it after a token or two.
        probe = await client.post(
            "/generate",
            json={"inputs": "Hello", "parameters": {"max_new_tokens": 50, "details": True}},
            headers=bearer("probe"),
        )
        tokens = [t["text"] for t in probe.json()["details"]["tokens"]]
        stop = next(t for t in tokens[1:] if t.strip())

        client.headers.update(bearer("tok"))
        first = await client.post(
            "/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 50, "stop": [stop], "details": True}}
        )
        details = first.json()["details"]
        prompt, generated = details["prompt_tokens"], details["generated_tokens"]
        assert details["finish_reason"] == "stop_sequence" and generated < 50, details
        used = prompt + generated  # charged prompt + 50, refunded 50 - generated

        # One token more than what is left: refused, and what is left counts the refund.
        refused = await gen(client, "Hello", max_new_tokens=TPM - used - prompt + 1)
        assert refused.status_code == 429 and refused.json()["error_type"] == "rate_limited", refused.text
        assert refused.headers["ratelimit-limit"] == str(TPM)
        assert refused.headers["ratelimit-remaining"] == str(TPM - used)  # without the refund: TPM - prompt - 50
        # A model failure gives back all of its max_new_tokens; its prompt stays charged.
        await set_fault(client, kind="error", count=1)
        assert (await gen(client, "Hello", max_new_tokens=10)).status_code == 500
        await clear_fault(client)
        used += prompt
        refused = await gen(client, "Hello", max_new_tokens=TPM - used - prompt + 1)
        assert refused.headers["ratelimit-remaining"] == str(TPM - used)
        # Exactly what is left fits.
        assert (await gen(client, "Hello", max_new_tokens=TPM - used - prompt)).status_code == 200
        # A request that could never fit the key's limit is a 413, not a 429 to retry forever.
        too_big = await gen(client, "Hello", max_new_tokens=TPM)
        assert too_big.status_code == 413 and "200 tokens per minute" in too_big.json()["error"]


async def test_concurrent_requests_per_key(app_client: AppClient, key_file: Path) -> None:
    async with app_client(api_keys_file=key_file, enable_faults=True) as (client, app):
        client.headers.update(bearer("conc"))
        blocker = await hold_worker(client, app, max_new_tokens=2)  # one request of the key, held running
        refused = await gen(client, "second")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error_type"] == "rate_limited" and refused.headers["ratelimit-limit"] == "1"
        stream = await client.post("/generate_stream", json={"inputs": "hi"})
        assert stream.status_code == 429
        await clear_fault(client)
        assert (await blocker).status_code == 200
        results = await asyncio.gather(gen(client, "after"), client.get("/info"))
        assert [r.status_code for r in results] == [200, 200]
        assert app.gateway.limiter.in_flight("conc") == 0
        m = await metrics(client)
        assert sample(m, "gateway_rate_limited_total", key="conc", limit="concurrent") == 2
