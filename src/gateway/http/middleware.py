"""Pure-ASGI middleware: request id, body-size cap, and the one JSON access-log line per request.

It creates the request's ``RequestRecord`` (``scope["state"]["record"]``), which the route and the service fill
in, and at the end of the response (or when the client goes away) logs it and hands it to the stats sink.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError, HeadersTooLarge, PayloadTooLarge
from gateway.http.errors import error_body, error_headers, note_error
from gateway.http.responses import dumps
from gateway.logs import ACCESS_LOGGER
from gateway.stats import RequestRecord, StatsSink

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
access_log = logging.getLogger(ACCESS_LOGGER)


def outcome_for_status(code: int) -> str:
    if code < 400:
        return "success"
    if code == 499:
        return "cancelled"
    if code in (429, 503):
        return "rejected"
    if code == 504:
        return "timeout"
    return "client_error" if code < 500 else "server_error"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        sink: StatsSink,
        max_body_bytes: int,
        max_header_bytes: int = 16_384,
        log_payloads: bool = False,
        model_for_route: Callable[[str], str] | None = None,
        metered_routes: frozenset[str] | None = None,
        shed: Callable[[str, str, dict[bytes, bytes]], GatewayError | None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self.sink = sink
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.log_payloads = log_payloads
        self.model_for_route = model_for_route
        self.metered_routes = metered_routes
        self.shed = shed
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self.clock()
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers") or []:
            headers.setdefault(name, value)  # the first of repeated headers, as Starlette reads them
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        path = scope.get("path", "")
        record = RequestRecord(request_id=request_id, route=path)
        if self.model_for_route is not None:
            record.model = self.model_for_route(path)
        scope.setdefault("state", {})["record"] = record
        response_started = False
        response_done = False

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started, response_done
            if message["type"] == "http.response.start":
                response_started = True
                record.status_code = int(message["status"])
                raw = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                raw.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": raw}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                response_done = True
            await send(message)

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(f"the body is over the limit of {self.max_body_bytes} bytes")
            return message

        try:
            length = headers.get(b"content-length")
            header_bytes = sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or [])
            if header_bytes > self.max_header_bytes:
                await self._send_error(
                    send_wrapper,
                    record,
                    HeadersTooLarge(f"headers are over the limit of {self.max_header_bytes} bytes"),
                )
            elif length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await self._send_error(
                    send_wrapper, record, PayloadTooLarge(f"the body is over the limit of {self.max_body_bytes} bytes")
                )
            elif self.shed is not None and (refusal := self.shed(scope.get("method", ""), path, headers)) is not None:
                # Load shedding: a full queue answers 429 before routing and parsing (see ``shed``).
                await self._send_error(send_wrapper, record, refusal)
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except Exception as exc:  # the last net: no traceback or internals reach the client
            if not isinstance(exc, GatewayError):
                logging.getLogger("gateway.http").exception("unhandled error", extra={"request_id": request_id})
                exc = GatewayError()
            if not response_started:
                await self._send_error(send_wrapper, record, exc)
            else:
                note_error(record, exc)
        finally:
            if response_started and not response_done and record.error_type is None:
                record.status = "cancelled"
                record.error_type = "cancelled"
            self._finish(record, self.clock() - started)

    async def _send_error(self, send: Send, record: RequestRecord, error: GatewayError) -> None:
        note_error(record, error)
        body = dumps(error_body(error, record.request_id))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(error, record.request_id).items()]
        await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _finish(self, record: RequestRecord, latency_s: float) -> None:
        record.latency_s = latency_s
        if record.error_type is None:
            record.status = outcome_for_status(record.status_code or 500)
        fields: dict[str, object] = {
            "request_id": record.request_id,
            "route": record.route,
            "status_code": record.status_code,
            "status": record.status,
            "model": record.model,
            "latency_ms": _ms(latency_s),
            "queue_ms": _ms(record.queue_s),
            "inference_ms": _ms(record.inference_s),
            "prompt_tokens": record.prompt_tokens,
            "generated_tokens": record.generated_tokens,
            "batch_size": record.batch_size,
            "finish_reason": record.finish_reason,
        }
        if record.source_lang is not None or record.target_lang is not None:
            fields["source_lang"] = record.source_lang
            fields["target_lang"] = record.target_lang
        if record.streamed:
            fields["stream"] = True
        if record.error_type is not None:
            fields["error_type"] = record.error_type
            fields["error"] = record.error
        if self.log_payloads and record.payload:
            fields.update(record.payload)
        metered = self.metered_routes is None or record.route in self.metered_routes
        if record.status in ("server_error", "timeout"):
            level = logging.WARNING
        else:
            # Probes and scrapes arrive every few seconds: they log at DEBUG and stay out of the request metrics.
            level = logging.INFO if metered else logging.DEBUG
        access_log.log(level, "request finished", extra=fields)
        if metered:
            self.sink.request_finished(record)
