"""Every generation parameter across the schema's whole numeric range, edges and subnormals included
(hypothesis, a fixed seed): a 2xx or a 4xx, never a 5xx, and the circuit breaker never moves.

Extreme settings that the schema allows can still leave a row no distribution to sample from (a temperature of
1e-300 divides the logits into infinities); such a row is answered with a 4xx of its own, never the batch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving_helpers import GEN, metrics, sample

# Floats from the whole line, the edges of each range and a few troublemakers among them.
TROUBLE = [0.0, 5e-324, 1e-300, 1e-45, 1e-8, 1e-5, 0.5, 1.0, 2.0, 100.0, 1e300]


def numbers(low: float, high: float) -> st.SearchStrategy[float]:
    inside = st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
    return st.one_of(inside, st.sampled_from(TROUBLE), st.sampled_from([low, high]))


TGI_PARAMETERS = st.fixed_dictionaries(
    {"max_new_tokens": st.integers(1, 4)},
    optional={
        "temperature": numbers(0.0, 100.0),
        "top_p": numbers(0.0, 1.0),
        "typical_p": numbers(0.0, 1.0),
        "repetition_penalty": numbers(0.0, 100.0),
        "frequency_penalty": numbers(-2.0, 2.0),
        "top_k": st.integers(0, 100_000),
        "do_sample": st.booleans(),
        "seed": st.integers(0, 2**63 - 1),
        "top_n_tokens": st.integers(0, 5),
    },
)

OPENAI_FIELDS = st.fixed_dictionaries(
    {"max_tokens": st.integers(1, 4)},
    optional={
        "temperature": numbers(0.0, 2.0),
        "top_p": numbers(0.0, 1.0),
        "presence_penalty": numbers(-2.0, 2.0),
        "frequency_penalty": numbers(-2.0, 2.0),
        "logit_bias": st.dictionaries(st.integers(0, 300).map(str), numbers(-100.0, 100.0), max_size=4),
        "seed": st.integers(0, 2**63 - 1),
        "n": st.integers(1, 3),
        "logprobs": st.booleans(),
    },
)


@pytest.fixture(scope="module")
def call(make_module_client: Callable[..., Any]) -> Iterator[Callable[[str, dict[str, Any]], httpx.Response]]:
    """A ready app on a loop of its own, and a blocking call of it (hypothesis drives sync tests)."""
    loop = asyncio.new_event_loop()
    context = make_module_client()
    client, _ = loop.run_until_complete(context.__aenter__())

    def post(path: str, body: dict[str, Any]) -> httpx.Response:
        return loop.run_until_complete(client.post(path, json=body))

    post.client = client  # type: ignore[attr-defined]
    post.loop = loop  # type: ignore[attr-defined]
    yield post
    with contextlib.suppress(Exception):
        loop.run_until_complete(context.__aexit__(None, None, None))
    loop.close()


@pytest.fixture(scope="module")
def make_module_client(demo_cache_dir: Any) -> Callable[..., Any]:
    from asgi_lifespan import LifespanManager
    from prometheus_client import CollectorRegistry

    from gateway.app import create_app
    from gateway.settings import Settings
    from tests.integration.conftest import wait_ready

    @contextlib.asynccontextmanager
    async def open_client() -> Any:
        settings = Settings(demo_cache_dir=demo_cache_dir, model_process=False, breaker_failure_threshold=1)
        app = create_app(settings, registry=CollectorRegistry())
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as client:
                await wait_ready(client)
                yield client, app

    return open_client


def breaker_never_moved(call: Any) -> None:
    m = call.loop.run_until_complete(metrics(call.client))
    assert sample(m, "gateway_circuit_breaker_state", model=GEN) == 0
    assert sample(m, "gateway_requests_total", route="/generate", status="server_error", model=GEN) == 0
    assert sample(m, "gateway_requests_total", route="/v1/completions", status="server_error", model=GEN) == 0


EDGE_SETTINGS = settings(
    max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@EDGE_SETTINGS
@given(parameters=TGI_PARAMETERS)
def test_tgi_parameters_never_give_a_5xx(call: Any, parameters: dict[str, Any]) -> None:
    r = call("/generate", {"inputs": "Hello", "parameters": parameters})
    assert r.status_code < 500, (parameters, r.text)
    if r.status_code >= 400:
        assert r.json()["error_type"] == "validation", r.text
    breaker_never_moved(call)


@EDGE_SETTINGS
@given(fields=OPENAI_FIELDS)
def test_openai_fields_never_give_a_5xx(call: Any, fields: dict[str, Any]) -> None:
    r = call("/v1/completions", {"model": "m", "prompt": "Hello", **fields})
    assert r.status_code < 500, (fields, r.text)
    if r.status_code >= 400:
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    breaker_never_moved(call)
