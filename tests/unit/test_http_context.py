"""``RequestContext`` (``gateway.http.context``), driven as the pure-ASGI callable it is.

Each test hands it a scope, a ``receive`` and a ``send`` made here, around an inner app written for the test;
the access-log records go to a recording sink, and the log lines to pytest's ``caplog``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from gateway.errors import InvalidRequest, NotReady, QueueFull
from gateway.http.context import RequestContext, first_headers
from gateway.http.errors import outcome_for_status
from gateway.logs import ACCESS_LOGGER
from gateway.stats import RequestRecord, RequestStats
from tests.clock import ManualClock
from tests.unit.fake_engine import RecordingSink

InnerApp = Callable[[Scope, Receive, Send], Awaitable[None]]
METERED = frozenset({"/generate", "/v1/completions"})


def http_scope(
    path: str = "/generate", method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None
) -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


class Exchange:
    """One request through a ``RequestContext``: what it sent, and what it logged to the sink."""

    def __init__(self, inner: InnerApp, *, log_payloads: bool = False) -> None:
        self.sink = RecordingSink()
        self.clock = ManualClock(start=10.0)
        self.sent: list[Message] = []
        self.scopes: list[Scope] = []

        async def spy(scope: Scope, receive: Receive, send: Send) -> None:
            self.scopes.append(scope)
            await inner(scope, receive, send)

        self.app = RequestContext(
            spy,
            sink=self.sink,
            metered=METERED,
            model_for_path=lambda path: "the-model" if path in METERED else "",
            log_payloads=log_payloads,
            clock=self.clock,
        )

    async def run(self, scope: Scope) -> None:
        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            self.sent.append(message)

        await self.app(scope, receive, send)

    @property
    def status(self) -> int:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) == 1, self.sent
        return int(starts[0]["status"])

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return list(next(m for m in self.sent if m["type"] == "http.response.start")["headers"])

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]

    @property
    def body(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"))

    @property
    def record(self) -> RequestRecord:
        (record,) = self.sink.requests
        return record


def answering(status: int, body: bytes = b"{}", headers: list[tuple[bytes, bytes]] | None = None) -> InnerApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": body})

    return app


def raising(error: BaseException) -> InnerApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise error

    return app


@pytest.fixture
def access_lines(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    caplog.set_level(logging.DEBUG, logger=ACCESS_LOGGER)
    return lambda: [r for r in caplog.records if r.name == ACCESS_LOGGER]


# -- the request id --


async def test_a_valid_request_id_is_kept_and_echoed() -> None:
    x = Exchange(answering(200))
    await x.run(http_scope(headers=[(b"x-request-id", b"abc-123.4:5_6")]))
    assert x.header(b"x-request-id") == [b"abc-123.4:5_6"] and x.record.request_id == "abc-123.4:5_6"


@pytest.mark.parametrize("given", [b"", b"has space", b"<script>", b"a" * 129, "é".encode("latin-1")])
async def test_an_invalid_or_missing_request_id_is_replaced(given: bytes) -> None:
    x = Exchange(answering(200))
    await x.run(http_scope(headers=[(b"x-request-id", given)] if given else []))
    (echoed,) = x.header(b"x-request-id")
    assert echoed != given and len(echoed) == 32 and int(echoed, 16) >= 0  # a fresh uuid4 hex
    assert x.record.request_id == echoed.decode()


async def test_every_answer_carries_exactly_one_request_id() -> None:
    # An inner app that sets its own X-Request-ID does not get a second one through.
    x = Exchange(answering(404, headers=[(b"X-Request-ID", b"inner"), (b"content-type", b"application/json")]))
    await x.run(http_scope(path="/nowhere", method="GET", headers=[(b"x-request-id", b"outer")]))
    assert [(k, v) for k, v in x.headers if k.lower() == b"x-request-id"] == [(b"x-request-id", b"outer")]
    assert x.header(b"content-type") == [b"application/json"]


def test_first_headers_keeps_the_first_of_repeated_headers() -> None:
    scope = http_scope(headers=[(b"x-request-id", b"one"), (b"x-request-id", b"two"), (b"a", b"b")])
    assert first_headers(scope) == {b"x-request-id": b"one", b"a": b"b"}
    assert first_headers({"type": "http"}) == {}


# -- the access-log record --


async def test_one_record_per_metered_request_goes_to_the_sink(
    access_lines: Callable[[], list[logging.LogRecord]],
) -> None:
    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        record: RequestRecord = scope["state"]["record"]
        assert record.model == "the-model" and record.route == "/generate"
        record.add(RequestStats(model="the-model", prompt_tokens=3, generated_tokens=5, queue_s=0.002, batch_size=2))
        x.clock.advance(0.25)
        await answering(200)(scope, receive, send)

    x = Exchange(inner)
    await x.run(http_scope())
    record = x.record
    assert (record.status_code, record.status, record.error_type) == (200, "success", None)
    assert record.latency_s == pytest.approx(0.25) and record.generated_tokens == 5
    (line,) = access_lines()
    assert line.levelno == logging.INFO and line.getMessage() == "request finished"
    fields = line.__dict__
    assert fields["request_id"] == record.request_id and fields["status"] == "success"
    assert fields["latency_ms"] == 250.0 and fields["queue_ms"] == 2.0 and fields["batch_size"] == 2
    assert "error_type" not in fields and "stream" not in fields and "source_lang" not in fields


async def test_probes_are_logged_at_debug_and_not_counted(access_lines: Callable[[], list[logging.LogRecord]]) -> None:
    x = Exchange(answering(200))
    await x.run(http_scope(path="/health", method="GET"))
    assert x.status == 200 and x.sink.requests == []
    (line,) = access_lines()
    assert line.levelno == logging.DEBUG and line.__dict__["route"] == "/health" and line.__dict__["model"] == ""


async def test_payloads_are_logged_only_when_asked(access_lines: Callable[[], list[logging.LogRecord]]) -> None:
    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        record: RequestRecord = scope["state"]["record"]
        record.payload = {"inputs": "secret prompt"}
        record.source_lang, record.target_lang, record.streamed = "en", "de", True
        await answering(200)(scope, receive, send)

    for log_payloads in (False, True):
        await Exchange(inner, log_payloads=log_payloads).run(http_scope())
    quiet, loud = access_lines()
    assert "inputs" not in quiet.__dict__ and loud.__dict__["inputs"] == "secret prompt"
    assert quiet.__dict__["source_lang"] == "en" and quiet.__dict__["stream"] is True


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (200, "success"),
        (204, "success"),
        (307, "success"),
        (400, "client_error"),
        (404, "client_error"),
        (405, "client_error"),
        (429, "rejected"),
        (499, "cancelled"),
        (500, "server_error"),
        (502, "server_error"),
        (503, "rejected"),
        (504, "timeout"),
    ],
)
async def test_status_codes_map_to_outcomes(code: int, outcome: str) -> None:
    assert outcome_for_status(code) == outcome
    x = Exchange(answering(code))
    await x.run(http_scope())
    assert (x.record.status_code, x.record.status) == (code, outcome)


async def test_a_timeout_or_server_error_logs_a_warning(access_lines: Callable[[], list[logging.LogRecord]]) -> None:
    for code in (504, 500):
        await Exchange(answering(code)).run(http_scope(path="/health", method="GET"))  # even on an unmetered path
    assert [line.levelno for line in access_lines()] == [logging.WARNING, logging.WARNING]


# -- the last net for errors --


async def test_a_gateway_error_becomes_its_json_answer() -> None:
    x = Exchange(raising(QueueFull(retry_after=0.2)))
    await x.run(http_scope(headers=[(b"x-request-id", b"rid-1")]))
    assert x.status == 429 and x.header(b"retry-after") == [b"1"] and x.header(b"x-request-id") == [b"rid-1"]
    assert x.header(b"content-type") == [b"application/json"]
    assert x.body == {"error": QueueFull.public_message, "error_type": "queue_full", "request_id": "rid-1"}
    assert int(x.header(b"content-length")[0]) == len(json.dumps(x.body, separators=(",", ":")).encode())
    assert (x.record.status, x.record.error_type, x.record.status_code) == ("rejected", "queue_full", 429)


async def test_a_gateway_error_on_an_openai_route_has_openais_shape() -> None:
    x = Exchange(raising(InvalidRequest("n: too many", param="n")))
    await x.run(http_scope(path="/v1/completions"))
    assert x.status == 400  # OpenAI answers a bad body with 400, not 422
    assert x.body == {
        "error": {"message": "n: too many", "type": "invalid_request_error", "param": "n", "code": "validation"}
    }
    assert x.record.status == "client_error" and x.record.error_type == "validation"
    x = Exchange(raising(NotReady(retry_after=5.0)))
    await x.run(http_scope(path="/v1/completions"))
    assert x.status == 503 and x.body["error"]["type"] == "service_unavailable" and x.header(b"retry-after") == [b"5"]


async def test_an_unexpected_exception_is_a_500_without_internals(caplog: pytest.LogCaptureFixture) -> None:
    x = Exchange(raising(RuntimeError("secret detail at /srv/model.py:12")))
    await x.run(http_scope(headers=[(b"x-request-id", b"rid-2")]))
    assert x.status == 500
    assert x.body == {"error": "internal error", "error_type": "internal_error", "request_id": "rid-2"}
    assert (x.record.status, x.record.error_type) == ("server_error", "internal_error")
    (logged,) = [r for r in caplog.records if r.name == "gateway.http"]
    assert logged.exc_info is not None and logged.__dict__["request_id"] == "rid-2"  # the details go to the log


async def test_an_error_after_the_answer_started_sends_no_second_answer() -> None:
    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        raise RuntimeError("broke mid-stream")

    x = Exchange(inner)
    await x.run(http_scope())
    assert x.status == 200 and len(x.sent) == 2
    assert (x.record.status_code, x.record.status, x.record.error_type) == (200, "server_error", "internal_error")


async def test_a_client_gone_mid_response_is_logged_as_cancelled() -> None:
    async def stops_early(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        # The response ends without its last body message: the client went away (Starlette stops streaming).

    x = Exchange(stops_early)
    await x.run(http_scope())
    assert (x.record.status_code, x.record.status, x.record.error_type) == (200, "cancelled", "cancelled")


async def test_a_request_cancelled_mid_response_is_still_logged_once() -> None:
    async def cancelled(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        raise asyncio.CancelledError

    x = Exchange(cancelled)
    with pytest.raises(asyncio.CancelledError):
        await x.run(http_scope())
    assert x.record.status == "cancelled" and len(x.sent) == 2


async def test_other_scopes_pass_through_untouched() -> None:
    async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "lifespan.startup.complete"})

    x = Exchange(lifespan)
    scope: Scope = {"type": "lifespan"}
    await x.run(scope)
    assert x.scopes == [scope] and "state" not in scope
    assert x.sent == [{"type": "lifespan.startup.complete"}] and x.sink.requests == []
