"""``gateway.http.errors``: the one place where errors become HTTP answers, native and OpenAI-shaped (``/v1/*``).

The pure functions are called directly; the handlers are installed on a tiny FastAPI app behind the real
``RequestContext``, reached through httpx's ASGI transport.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.types import Message

from gateway.errors import (
    BadRequest,
    BreakerOpen,
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    ModelError,
    ModelNotFound,
    PayloadTooLarge,
    QueueFull,
    RequestCancelled,
    Unauthorized,
)
from gateway.http.context import RequestContext
from gateway.http.errors import (
    error_body,
    error_headers,
    error_status,
    install_error_handlers,
    is_openai_path,
    note_error,
    send_error,
    validation_error,
)
from gateway.stats import RequestRecord
from tests.unit.fake_engine import RecordingSink


def test_openai_paths() -> None:
    assert is_openai_path("/v1/completions") and is_openai_path("/v1/models")
    assert not is_openai_path("/v1") and not is_openai_path("/generate") and not is_openai_path("/")


def test_a_validation_error_is_400_only_on_openai_paths() -> None:
    assert error_status(InvalidRequest(), "/generate") == 422
    assert error_status(InvalidRequest(), "/v1/chat/completions") == 400
    assert error_status(PayloadTooLarge(), "/v1/completions") == 413
    assert error_status(QueueFull(), "/v1/completions") == 429


def test_the_native_body() -> None:
    body = error_body(QueueFull(), "rid", "/generate")
    assert body == {"error": QueueFull.public_message, "error_type": "queue_full", "request_id": "rid"}
    assert error_body(ModelError("boom"), "rid") == {"error": "boom", "error_type": "model_error", "request_id": "rid"}


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InvalidRequest("x"), "invalid_request_error"),
        (BadRequest("x"), "invalid_request_error"),
        (Unauthorized(), "authentication_error"),
        (ModelNotFound(), "not_found_error"),
        (PayloadTooLarge(), "invalid_request_error"),
        (QueueFull(), "rate_limit_error"),
        (RequestCancelled(), "cancelled"),
        (BreakerOpen(), "service_unavailable"),
        (DeadlineExceeded(), "timeout"),
        (ModelError(), "server_error"),
        (GatewayError(), "server_error"),
    ],
)
def test_the_openai_body(error: GatewayError, kind: str) -> None:
    body = error_body(error, "rid", "/v1/completions")
    assert body == {"error": {"message": error.message, "type": kind, "param": None, "code": error.error_type}}


def test_the_openai_body_names_the_field_at_fault() -> None:
    body = error_body(InvalidRequest("n: too big", param="n"), "rid", "/v1/completions")
    assert body["error"]["param"] == "n" and "rid" not in json.dumps(body)  # the id is in X-Request-ID only


@pytest.mark.parametrize(("retry_after", "header"), [(None, None), (0.0, "1"), (0.2, "1"), (1.0, "1"), (4.1, "5")])
def test_retry_after_is_whole_seconds_and_at_least_one(retry_after: float | None, header: str | None) -> None:
    headers = error_headers(QueueFull(retry_after=retry_after), "rid")
    assert headers.get("X-Request-ID") == "rid" and headers.get("Retry-After") == header


def test_note_error_fills_the_record() -> None:
    record = RequestRecord(request_id="r", route="/generate")
    note_error(record, DeadlineExceeded())
    assert (record.status, record.error_type, record.error) == ("timeout", "timeout", DeadlineExceeded.public_message)
    note_error(None, DeadlineExceeded())  # no record (a route outside the middleware): nothing to fill


async def test_send_error_answers_at_the_asgi_level() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await send_error(send, BreakerOpen(retry_after=12.5), "rid", "/v1/completions")
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 503 and headers[b"retry-after"] == b"13" and headers[b"x-request-id"] == b"rid"
    assert headers[b"content-type"] == b"application/json" and int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"])["error"]["code"] == "circuit_open"


def test_validation_errors_name_their_fields() -> None:
    exc = RequestValidationError(
        [
            {"loc": ("body", "parameters", "max_new_tokens"), "msg": "Input should be greater than 0", "type": "x"},
            {"loc": ("body", "stop", "list[str]", 0), "msg": "too long", "type": "x"},
            {"loc": ("body", "inputs", "str"), "msg": "bad", "type": "x"},
            {"loc": ("body", "colour"), "msg": "Extra inputs are not permitted", "type": "extra_forbidden"},
            {"loc": ("body", 12), "msg": "JSON decode error", "type": "json_invalid"},
            {"loc": ("body", "sixth"), "msg": "left out", "type": "x"},
        ]
    )
    error = validation_error(exc)
    assert error.message == (
        "parameters.max_new_tokens: Input should be greater than 0; stop.0: too long; inputs: bad; "
        "colour: unknown parameter; body: invalid JSON"
    )
    assert error.param == "parameters.max_new_tokens" and error.status_code == 422
    empty = validation_error(RequestValidationError([{"loc": ("body",), "msg": "Field required", "type": "missing"}]))
    assert empty.message == "body: Field required" and empty.param == "body"


# -- the handlers, on a tiny app behind the request context --


class Body(BaseModel):
    n: int


def tiny_app(sink: RecordingSink) -> RequestContext:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/generate")
    async def generate(body: Body) -> dict[str, int]:
        if body.n > 1:
            raise QueueFull(retry_after=2.0)
        return {"n": body.n}

    @app.post("/v1/completions")
    async def completions(body: Body) -> dict[str, int]:
        if body.n > 1:
            raise BadRequest("n: not supported", param="n")
        return {"n": body.n}

    metered = frozenset({"/generate", "/v1/completions"})
    return RequestContext(app, sink=sink, metered=metered, model_for_path=lambda path: "m")


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def client(sink: RecordingSink) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=tiny_app(sink))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_a_gateway_error_from_a_route(client: httpx.AsyncClient, sink: RecordingSink) -> None:
    response = await client.post("/generate", json={"n": 2}, headers={"X-Request-ID": "rid-7"})
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    assert response.json() == {"error": QueueFull.public_message, "error_type": "queue_full", "request_id": "rid-7"}
    response = await client.post("/v1/completions", json={"n": 2})
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"
    assert [(r.status, r.error_type) for r in sink.requests] == [
        ("rejected", "queue_full"),
        ("client_error", "bad_request"),
    ]


async def test_a_malformed_body_is_422_natively_and_400_on_openai_routes(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    response = await client.post("/generate", json={"n": "many"}, headers={"X-Request-ID": "rid-8"})
    assert response.status_code == 422
    body = response.json()
    assert body["error_type"] == "validation" and body["error"].startswith("n: ") and body["request_id"] == "rid-8"
    response = await client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "body: invalid JSON",
        "type": "invalid_request_error",
        "param": "body",
        "code": "validation",
    }
    assert [r.status_code for r in sink.requests] == [422, 400]


async def test_starlettes_404_and_405_in_the_gateways_shapes(client: httpx.AsyncClient, sink: RecordingSink) -> None:
    response = await client.get("/nowhere", headers={"X-Request-ID": "rid-9"})
    assert response.status_code == 404 and response.headers["x-request-id"] == "rid-9"
    assert response.json() == {"error": "Not Found", "error_type": "not_found", "request_id": "rid-9"}
    response = await client.get("/generate")
    assert response.status_code == 405 and response.json()["error_type"] == "method_not_allowed"
    response = await client.get("/v1/nowhere")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "Not Found",
        "type": "not_found_error",
        "param": None,
        "code": "not_found",
    }
    assert [(r.status_code, r.status) for r in sink.requests] == [(405, "client_error")]  # only /generate is metered
