"""``JSONBodyRoute``, the inference routes' handler, refuses endpoints it cannot serve when the route is built."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.responses import Response

from gateway.http.body_route import JSONBodyRoute, is_json_content_type


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
