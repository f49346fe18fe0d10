"""The one place where errors become HTTP responses: ``{"error", "error_type", "request_id"}``."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import GatewayError, InvalidRequest
from gateway.http.responses import JSONResponse
from gateway.stats import RequestRecord

log = logging.getLogger("gateway.http")


def error_body(error: GatewayError, request_id: str) -> dict[str, str]:
    return {"error": error.message, "error_type": error.error_type, "request_id": request_id}


def error_headers(error: GatewayError, request_id: str) -> dict[str, str]:
    headers = {"X-Request-ID": request_id}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return headers


def note_error(record: RequestRecord | None, error: GatewayError) -> None:
    if record is not None:
        record.status = error.outcome
        record.error_type = error.error_type
        record.error = error.message


def error_response(error: GatewayError, request: Request) -> JSONResponse:
    record: RequestRecord | None = getattr(request.state, "record", None)
    request_id = record.request_id if record else ""
    note_error(record, error)
    return JSONResponse(
        error_body(error, request_id), status_code=error.status_code, headers=error_headers(error, request_id)
    )


def _field(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def validation_message(exc: RequestValidationError) -> str:
    messages = []
    for err in exc.errors()[:5]:
        field = _field(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid value"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown parameter"
        elif err.get("type") == "json_invalid":
            field, msg = "body", "invalid JSON"
        messages.append(f"{field}: {msg}")
    return "; ".join(messages) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    async def on_gateway_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return error_response(exc, request)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(InvalidRequest(validation_message(exc)), request)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        err = GatewayError(str(exc.detail))
        record: RequestRecord | None = getattr(request.state, "record", None)
        request_id = record.request_id if record else ""
        error_type = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        if record is not None:
            record.status = "client_error" if exc.status_code < 500 else "server_error"
            record.error_type = error_type
        return JSONResponse(
            {"error": err.message, "error_type": error_type, "request_id": request_id},
            status_code=exc.status_code,
            headers={"X-Request-ID": request_id},
        )

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
