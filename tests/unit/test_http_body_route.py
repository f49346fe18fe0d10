"""``gateway.http.body_route``: ``JSONBodyRoute`` refuses endpoints it cannot serve when the route is built, and
``parse_body`` turns raw bytes into the body model or FastAPI's validation errors."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.responses import Response

from gateway.http.body_route import JSONBodyRoute, is_json_content_type, parse_body


class Body(BaseModel):
    inputs: str


def test_endpoints_of_another_shape_are_refused() -> None:
    router = APIRouter(route_class=JSONBodyRoute)

    async def query_param(request: Request, n: int) -> Response:
        return Response()

    async def no_request(body: Body) -> Response:
        return Response()

    async def one_more(request: Request, body: Body, n: int) -> Response:
        return Response()

    async def fine(request: Request, body: Body) -> Response:
        return Response()

    for endpoint in (query_param, no_request, one_more):
        with pytest.raises(TypeError, match="JSONBodyRoute needs"):
            router.add_api_route("/x", endpoint, methods=["POST"])
    # Dependencies would never run: refused too.
    with pytest.raises(TypeError, match="runs no dependencies"):
        router.add_api_route("/x", fine, methods=["POST"], dependencies=[Depends(lambda: None)])
    router.add_api_route("/x", fine, methods=["POST"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("", False),
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/problem+json", True),
        ("text/plain", False),
        ("text/json", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
    ],
)
def test_json_content_types(value: str | None, expected: bool) -> None:
    assert is_json_content_type(value) is expected


class Params(BaseModel):
    max_new_tokens: int = 20


class Nested(BaseModel):
    inputs: str
    parameters: Params = Params()


def errors_of(raw: bytes, content_type: str | None = "application/json") -> list[dict[str, Any]]:
    with pytest.raises(RequestValidationError) as caught:
        parse_body(Nested, raw, content_type)
    return list(caught.value.errors())


def test_parse_body_validates_json_bytes_into_the_model() -> None:
    body = parse_body(Nested, b'{"inputs": "hi", "parameters": {"max_new_tokens": 3}}', "application/json")
    assert body == Nested(inputs="hi", parameters=Params(max_new_tokens=3))
    # A UTF-8 byte-order mark is skipped, as json.loads (FastAPI's parser) does.
    assert parse_body(Nested, b'\xef\xbb\xbf{"inputs": "bom"}', "application/json; charset=utf-8") == Nested(
        inputs="bom"
    )


def test_parse_body_refusals_are_fastapis_validation_errors_located_in_the_body() -> None:
    (missing,) = errors_of(b"")
    assert missing["type"] == "missing" and missing["loc"] == ("body",)
    (not_json,) = errors_of(b'{"inputs": "hi"}', "text/plain")
    assert not_json["type"] == "content_type" and not_json["loc"] == ("body",)
    (no_type,) = errors_of(b'{"inputs": "hi"}', None)
    assert no_type["type"] == "content_type"
    (invalid,) = errors_of(b'{"inputs": ')
    assert invalid["type"] == "json_invalid" and invalid["loc"][0] == "body"
    (wrong,) = errors_of(b'{"inputs": "hi", "parameters": {"max_new_tokens": "many"}}')
    assert wrong["loc"] == ("body", "parameters", "max_new_tokens") and wrong["type"] == "int_parsing"
    (absent,) = errors_of(b'{"parameters": {}}')
    assert absent["loc"] == ("body", "inputs") and absent["type"] == "missing"
