"""``SizeLimits`` (``gateway.http.limits``): 431 for headers over the cap, 413 for a body over it, declared or not.

Driven as pure ASGI: a scope, a ``receive`` that hands out the body in the chunks the test chose, and an inner
app that reads the whole body. Once through a ``RequestContext`` too, to see the error become its answer.
"""

from __future__ import annotations

import json

import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway.errors import HeadersTooLarge, PayloadTooLarge
from gateway.http.context import RequestContext
from gateway.http.limits import SizeLimits
from tests.unit.fake_engine import RecordingSink

MAX_BODY = 100
MAX_HEADERS = 200


class Reader:
    """An inner app that reads the body to its end and answers 200; counts what it got."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.called = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        while True:
            message = await receive()
            self.received.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Chunks:
    """``receive``: the body in the given chunks; counts how many were asked for."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.asked = 0

    async def __call__(self) -> Message:
        self.asked += 1
        body = self.chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(self.chunks)}


async def discard(message: Message) -> None:
    pass


def scope(headers: list[tuple[bytes, bytes]]) -> Scope:
    return {"type": "http", "method": "POST", "path": "/generate", "headers": headers}


def limits(app: Reader) -> SizeLimits:
    return SizeLimits(app, max_body_bytes=MAX_BODY, max_header_bytes=MAX_HEADERS)


async def test_headers_over_the_cap_are_431_before_the_app_runs() -> None:
    app = Reader()
    # Each header counts its name, its value and 4 bytes (": " and CRLF).
    at_cap = [(b"x-pad", b"v" * (MAX_HEADERS - 9))]
    await limits(app)(scope(at_cap), Chunks(b""), discard)
    assert app.called
    app = Reader()
    with pytest.raises(HeadersTooLarge) as caught:
        await limits(app)(scope([(b"x-pad", b"v" * (MAX_HEADERS - 8))]), Chunks(b""), discard)
    assert caught.value.status_code == 431 and str(MAX_HEADERS) in caught.value.message and not app.called


@pytest.mark.parametrize("declared", [b"101", b"99999999999", b"-1", b"1e3", b"abc"])
async def test_a_declared_length_over_the_limit_or_not_a_number_is_413_before_reading(declared: bytes) -> None:
    app = Reader()
    body = Chunks(b"x")
    with pytest.raises(PayloadTooLarge) as caught:
        await limits(app)(scope([(b"content-length", declared)]), body, discard)
    assert caught.value.status_code == 413 and not app.called and body.asked == 0


async def test_a_body_at_the_limit_passes() -> None:
    app = Reader()
    await limits(app)(scope([(b"content-length", b"100")]), Chunks(b"x" * 60, b"y" * 40), discard)
    assert app.received == [b"x" * 60, b"y" * 40]


async def test_a_chunked_body_over_the_limit_is_413_as_the_bytes_arrive() -> None:
    app = Reader()
    body = Chunks(b"a" * 60, b"b" * 41, b"c" * 10, b"d")
    with pytest.raises(PayloadTooLarge):
        await limits(app)(scope([(b"transfer-encoding", b"chunked")]), body, discard)
    assert app.received == [b"a" * 60]  # the chunk that crossed the limit never reached the app
    assert body.asked == 2  # and nothing after it was read


async def test_a_lying_content_length_is_caught_by_the_bytes() -> None:
    app = Reader()
    with pytest.raises(PayloadTooLarge):
        await limits(app)(scope([(b"content-length", b"10")]), Chunks(b"x" * 50, b"x" * 51), discard)


async def test_other_scopes_pass_through() -> None:
    app = Reader()
    huge = [(b"x-pad", b"v" * 10 * MAX_HEADERS)]
    await limits(app)({"type": "websocket", "headers": huge}, Chunks(b""), discard)
    assert app.called


async def test_the_request_context_answers_the_limits_errors() -> None:
    sink = RecordingSink()
    app = RequestContext(limits(Reader()), sink=sink, metered=frozenset({"/generate"}), model_for_path=lambda path: "m")
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope([(b"content-length", b"1000")]), Chunks(b""), send)
    start, body = sent
    assert start["status"] == 413 and json.loads(body["body"])["error_type"] == "payload_too_large"
    sent.clear()
    await app(scope([(b"x-pad", b"v" * MAX_HEADERS)]), Chunks(b""), send)
    assert sent[0]["status"] == 431 and json.loads(sent[1]["body"])["error_type"] == "headers_too_large"
    assert [(r.status_code, r.status) for r in sink.requests] == [(413, "client_error"), (431, "client_error")]
