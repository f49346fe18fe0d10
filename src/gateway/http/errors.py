"""The one place where errors become HTTP responses.

Native routes answer ``{"error", "error_type", "request_id"}``; the OpenAI routes (``/v1/*``) answer OpenAI's
``{"error": {"message", "type", "param", "code"}}`` (``code`` is the gateway's ``error_type``; the request id stays
in ``X-Request-ID``), and a malformed body there is a 400, as OpenAI and vLLM answer it, rather than a 422.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from gateway.errors import GatewayError, InvalidRequest, RateLimited, Unauthorized
from gateway.http.responses import JSONResponse, dumps
from gateway.stats import RequestRecord

log = logging.getLogger("gateway.http")

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "cancelled",
    503: "service_unavailable",
    504: "timeout",
}


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/")


def error_status(error: GatewayError, path: str) -> int:
    if error.status_code == 422 and is_openai_path(path):
        return 400
    return error.status_code


def error_body(error: GatewayError, request_id: str, path: str = "") -> dict[str, Any]:
    if is_openai_path(path):
        status = error_status(error, path)
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.error_type}}
    return {"error": error.message, "error_type": error.error_type, "request_id": request_id}


def error_headers(error: GatewayError, request_id: str) -> dict[str, str]:
    headers = {"X-Request-ID": request_id}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    if isinstance(error, RateLimited):
        # The IETF draft's fields (draft-ietf-httpapi-ratelimit-headers): the limit that was hit, what is left of
        # it, and seconds until the window frees room.
        headers["RateLimit-Limit"] = str(error.quota)
        headers["RateLimit-Remaining"] = str(error.remaining)
        headers["RateLimit-Reset"] = str(max(1, math.ceil(error.reset_s)))
    elif isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="gateway"'
    if error.closes_connection:
        headers["Connection"] = "close"
    return headers


def note_error(record: RequestRecord | None, error: GatewayError) -> None:
    if record is not None:
        record.status = error.outcome
        record.error_type = error.error_type
        record.error = error.message


async def send_error(send: Send, error: GatewayError, request_id: str, path: str) -> None:
    """Answer with ``error`` at the ASGI level (for middleware, where there is no ``Request``)."""
    body = dumps(error_body(error, request_id, path))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(error, request_id).items()]
    await send({"type": "http.response.start", "status": error_status(error, path), "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_response(error: GatewayError, request: Request) -> JSONResponse:
    record: RequestRecord | None = getattr(request.state, "record", None)
    request_id = record.request_id if record else ""
    note_error(record, error)
    path = request.url.path
    return JSONResponse(
        error_body(error, request_id, path),
        status_code=error_status(error, path),
        headers=error_headers(error, request_id),
    )


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "dict[str,float]"})


def _field(loc: tuple[object, ...]) -> str:
    """The field a validation error is about; pydantic's tags for the branches of a union are left out."""
    parts = [
        str(p)
        for p in loc
        if p != "body" and not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p or p.startswith("function-")))
    ]
    return ".".join(parts) or "body"


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    """One ``InvalidRequest`` naming the fields at fault (the first one as its ``param``)."""
    messages = []
    params = []
    for err in exc.errors()[:5]:
        field = _field(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid value"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown parameter"
        elif err.get("type") == "json_invalid":
            field, msg = "body", "invalid JSON"
        messages.append(f"{field}: {msg}")
        params.append(field)
    return InvalidRequest("; ".join(messages) or "invalid request", param=params[0] if params else None)


def install_error_handlers(app: FastAPI) -> None:
    async def on_gateway_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return error_response(exc, request)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc), request)

    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, GatewayError):
            # FastAPI's own body reading turns whatever the receive channel raised (the size limits' 413, the
            # body timeout's 408) into a 400 "error parsing the body": answer with the error itself.
            return error_response(exc.__cause__, request)
        error = _HTTPError(str(exc.detail), exc.status_code)
        record: RequestRecord | None = getattr(request.state, "record", None)
        if record is not None:
            record.status = outcome_for_status(exc.status_code)
            record.error_type = error.error_type
        request_id = record.request_id if record else ""
        return JSONResponse(
            error_body(error, request_id, request.url.path),
            status_code=exc.status_code,
            headers={"X-Request-ID": request_id},
        )

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)  # type: ignore[arg-type]


def outcome_for_status(code: int) -> str:
    """The ``status`` label of a request answered with ``code`` and no gateway error (404, 405, ...)."""
    if code < 400:
        return "success"
    if code == 499:
        return "cancelled"
    if code in (429, 503):
        return "rejected"
    if code == 504:
        return "timeout"
    return "client_error" if code < 500 else "server_error"


class _HTTPError(GatewayError):
    """Starlette's own 404 and 405 (and any other ``HTTPException``), in the gateway's error shape."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code  # type: ignore[misc]
        self.error_type = {404: "not_found", 405: "method_not_allowed"}.get(status_code, "http_error")  # type: ignore[misc]
