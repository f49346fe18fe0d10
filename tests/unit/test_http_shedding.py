"""``LoadShedding`` (``gateway.http.shedding``): a 429 from the path alone while the model's queue is full.

The refusal comes from a real ``Gateway`` over an ``Engine`` of fake models (``tests.unit.fake_engine``) whose
admission queue the test fills by reserving its slots, as requests still being tokenized hold them. The
middleware is driven as pure ASGI around an inner app that notes whether it was reached.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import QueueFull, Unauthorized
from gateway.http.context import RequestContext
from gateway.http.keys import Authentication
from gateway.http.routing import ROUTES
from gateway.http.shedding import LoadShedding
from gateway.keys import ApiKey, KeyRing, sha256_digest
from gateway.scheduler.queue import AdmissionQueue
from tests.unit.fake_engine import GENERATION_ID, TRANSLATION_ID, FakeGateway, RecordingSink

KEY = "s3cret"


class Inner:
    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def discard(message: Message) -> None:
    pass


def request(path: str, method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Awaitable[FakeGateway]]]:
    made: list[FakeGateway] = []

    async def build(**overrides: Any) -> FakeGateway:
        fake = FakeGateway(max_queue=2, **overrides)
        made.append(fake)
        await fake.gateway.start()
        return fake

    yield build
    for fake in made:
        await fake.gateway.close()


def queue(fake: FakeGateway, model: str = GENERATION_ID) -> AdmissionQueue:
    return fake.engine.services[model].scheduler.queue


def shedding(fake: FakeGateway, inner: Inner, api_key: str | None = None) -> ASGIApp:
    """Load shedding as the app has it: after authentication (when a key is configured)."""
    shed = LoadShedding(inner, gateway=fake.gateway, routes=ROUTES)
    if api_key is None:
        return shed
    keys = KeyRing([ApiKey("default", sha256_digest(api_key))])
    return Authentication(shed, keys=keys, public_paths=(), on_failure=lambda path: None)


async def test_posts_to_a_full_models_routes_are_refused_before_the_app(
    started: Callable[..., Awaitable[FakeGateway]],
) -> None:
    fake = await started()
    inner = Inner()
    app = shedding(fake, inner)
    await app(request("/generate"), receive, discard)
    assert inner.paths == ["/generate"]  # room in the queue: through
    queue(fake).reserve(2)
    for path in ("/generate", "/generate_stream", "/"):
        with pytest.raises(QueueFull) as caught:
            await app(request(path), receive, discard)
        assert caught.value.status_code == 429 and caught.value.retry_after == 1.0
    assert inner.paths == ["/generate"]
    queue(fake).release(2)
    await app(request("/generate"), receive, discard)  # the refusal is gone with the full queue
    assert inner.paths == ["/generate", "/generate"]


async def test_only_sheddable_posts_are_refused(started: Callable[..., Awaitable[FakeGateway]]) -> None:
    fake = await started()
    queue(fake).reserve(2)
    inner = Inner()
    app = shedding(fake, inner)
    let_through = [
        request("/generate", method="GET"),  # not a POST (its 405 comes from the router)
        request("/v1/completions"),  # the body names the model
        request("/v1/chat/completions"),
        request("/health"),
        request("/translate"),  # another model, whose queue has room
    ]
    for scope in let_through:
        await app(scope, receive, discard)
    assert inner.paths == ["/generate", "/v1/completions", "/v1/chat/completions", "/health", "/translate"]
    queue(fake, TRANSLATION_ID).reserve(2)
    with pytest.raises(QueueFull):
        await app(request("/translate"), receive, discard)


async def test_only_callers_with_a_valid_key_are_shed(started: Callable[..., Awaitable[FakeGateway]]) -> None:
    fake = await started()
    queue(fake).reserve(2)
    inner = Inner()
    app = shedding(fake, inner, api_key=KEY)
    for headers in (
        [],
        [(b"authorization", b"Bearer wrong")],
        [(b"x-api-key", b"wrong")],
        [(b"authorization", b"s3cret")],
    ):
        with pytest.raises(Unauthorized):  # a wrong key is a 401 under overload too, never a 429
            await app(request("/generate", headers=headers), receive, discard)
    assert inner.paths == []
    for headers in (
        [(b"authorization", b"Bearer s3cret")],
        [(b"authorization", b"bearer s3cret")],
        [(b"x-api-key", b"s3cret")],
    ):
        with pytest.raises(QueueFull):
            await app(request("/generate", headers=headers), receive, discard)
    assert inner.paths == []


async def test_no_refusal_while_draining_or_with_the_breaker_open(
    started: Callable[..., Awaitable[FakeGateway]],
) -> None:
    # There the route answers as before (503 draining, 503 circuit_open), not the shed 429.
    fake = await started()
    queue(fake).reserve(2)
    inner = Inner()
    app = shedding(fake, inner)
    fake.engine.services[GENERATION_ID].breaker.trip()
    await app(request("/generate"), receive, discard)
    fake.clock.advance(fake.settings.breaker_recovery_s)  # half-open: still not shed
    await app(request("/generate"), receive, discard)
    fake = await started()
    queue(fake).reserve(2)
    fake.gateway.begin_drain()
    await shedding(fake, inner)(request("/generate"), receive, discard)
    assert inner.paths == ["/generate"] * 3


async def test_a_shed_request_is_answered_429_by_the_request_context(
    started: Callable[..., Awaitable[FakeGateway]],
) -> None:
    fake = await started()
    queue(fake).reserve(2)
    sink = RecordingSink()
    app = RequestContext(
        shedding(fake, Inner()), sink=sink, metered=ROUTES.metered, model_for_path=lambda path: GENERATION_ID
    )
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(request("/generate"), receive, send)
    start, body = sent
    assert start["status"] == 429 and (b"retry-after", b"1") in start["headers"]
    assert json.loads(body["body"])["error_type"] == "queue_full"
    (record,) = sink.requests
    assert (record.status, record.error_type) == ("rejected", "queue_full")
