"""A route class for the inference endpoints: one JSON body model, parsed and validated in one step.

FastAPI's generic handler reads the body, ``json.loads`` it, solves the dependency graph and validates the
resulting dict, a large share of the event loop's time per request on the inference routes. These endpoints all
have the form ``async def endpoint(request, body: Model) -> Response``, so ``JSONBodyRoute`` does the same work
directly: it validates the raw bytes with pydantic's ``model_validate_json`` (parsing
and validation in Rust). The route stays a FastAPI ``APIRoute``: OpenAPI, ``/docs`` and routing are unchanged, and
errors take the same path (``RequestValidationError`` with FastAPI's ``("body", ...)`` locations,
``GatewayError``) to the one place that maps them to statuses.

What FastAPI's handler does and this one keeps:
- only a JSON content type (``application/json`` or ``application/*+json``) is read as JSON; none at all is not
  (FastAPI's ``strict_content_type``: a cross-site request from a browser cannot smuggle a body in);
- an empty body is a missing body; invalid JSON is a validation error of type ``json_invalid``;
- a client that goes away while its body is read is a cancelled request (499), not a server error.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.errors import RequestCancelled

_UTF8_BOM = b"\xef\xbb\xbf"  # json.loads (FastAPI's parser) skips it; pydantic's does not


def is_json_content_type(value: str | None) -> bool:
    """``application/json`` or ``application/*+json`` (parameters such as charset ignored)."""
    if not value:
        return False
    kind = value.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _body_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]


def parse_body(model: type[BaseModel], raw: bytes, content_type: str | None) -> BaseModel:
    """``raw`` validated as ``model``, or ``RequestValidationError`` as FastAPI would raise it."""
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    if not is_json_content_type(content_type):
        raise RequestValidationError(
            [{"type": "content_type", "loc": ("body",), "msg": "Content-Type must be application/json", "input": None}]
        )
    try:
        return model.model_validate_json(raw.removeprefix(_UTF8_BOM))
    except ValidationError as exc:
        raise RequestValidationError(_body_errors(exc)) from None


class JSONBodyRoute(APIRoute):
    """An ``APIRoute`` for endpoints ``(request: Request, body: Model) -> Response``, with a lean handler.

    The API key was checked before routing (``gateway.http.keys``). Endpoints of any other shape are refused when
    the route is built, so a new route cannot silently lose FastAPI's parameter handling, and so are dependencies
    (they would never run).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        params = list(inspect.signature(self.endpoint).parameters)
        model = typing.get_type_hints(self.endpoint).get("body")
        if params != ["request", "body"] or not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{self.path}: JSONBodyRoute needs an endpoint (request: Request, body: <model>)")
        if self.dependencies:
            raise TypeError(f"{self.path}: JSONBodyRoute runs no dependencies; use its guard")
        endpoint = typing.cast(Callable[[Request, Any], Awaitable[Response]], self.endpoint)

        async def handle(request: Request) -> Response:
            try:
                raw = await request.body()
            except ClientDisconnect:
                raise RequestCancelled() from None
            body = parse_body(model, raw, request.headers.get("content-type"))
            return await endpoint(request, body)

        return handle
