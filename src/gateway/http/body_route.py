"""A route class for the inference endpoints: one JSON body model, parsed and validated in one step.

FastAPI's generic handler reads the body, ``json.loads`` it, solves the dependency graph and validates the
resulting dict; on the inference routes that was a fifth of the event loop's time per request (profiled at
concurrency 32). These endpoints all have the form ``async def endpoint(request, body: Model) -> Response``, so
``JSONBodyRoute`` does the same work directly: it runs the route's guard, and validates the raw bytes with
pydantic's ``model_validate_json`` (parsing and validation in Rust). The route stays a FastAPI ``APIRoute``:
OpenAPI, ``/docs`` and routing are unchanged, and errors take the same path (``RequestValidationError`` with
FastAPI's ``("body", ...)`` locations, ``GatewayError``) to the one place that maps them to statuses.

What FastAPI's handler does and this one keeps:
- a body whose content type is not JSON is not parsed as JSON (a cross-site form post cannot smuggle one in);
- an empty body is a missing body;
- invalid JSON is a validation error of type ``json_invalid``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import request_response as starlette_request_response

Guard = Callable[[Request], Awaitable[None]]


def is_json_content_type(value: str | None) -> bool:
    """No content type, ``application/json`` or ``application/*+json`` (parameters such as charset ignored)."""
    if not value:
        return True
    kind = value.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _body_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]


def parse_body(model: type[BaseModel], raw: bytes, content_type: str | None) -> BaseModel:
    """``raw`` validated as ``model``, or ``RequestValidationError`` as FastAPI would raise it."""
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        if is_json_content_type(content_type):
            return model.model_validate_json(raw)
        return model.model_validate(raw)  # fails: bytes are not an object, as in FastAPI
    except ValidationError as exc:
        raise RequestValidationError(_body_errors(exc)) from None


class JSONBodyRoute(APIRoute):
    """An ``APIRoute`` for endpoints ``(request: Request, body: Model) -> Response``, with a lean handler.

    ``guard`` (the API-key check) runs before the body is read. Endpoints of any other shape are refused when the
    route is built, so a new route cannot silently lose FastAPI's parameter handling. The route's ASGI app is
    Starlette's own ``request_response`` (the app's exception handlers included), without the two exit stacks
    FastAPI's copy of it opens per request for dependencies with ``yield`` (these routes have none).
    """

    guard: Guard | None = None

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.app = starlette_request_response(self.get_route_handler())

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        params = list(inspect.signature(self.endpoint).parameters)
        model = typing.get_type_hints(self.endpoint).get("body")
        if params[:2] != ["request", "body"] or not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{self.path}: JSONBodyRoute needs an endpoint (request: Request, body: <model>)")
        endpoint = typing.cast(Callable[[Request, Any], Awaitable[Response]], self.endpoint)
        guard = self.guard

        async def handle(request: Request) -> Response:
            if guard is not None:
                await guard(request)
            body = parse_body(model, await request.body(), request.headers.get("content-type"))
            return await endpoint(request, body)

        return handle


def json_body_route(guard: Guard) -> type[JSONBodyRoute]:
    """A ``JSONBodyRoute`` class that runs ``guard`` first (for ``APIRouter(route_class=...)``)."""
    return type("GuardedJSONBodyRoute", (JSONBodyRoute,), {"guard": staticmethod(guard)})
