"""Pure-ASGI middleware: the request id, and the one JSON access-log line per request.

It creates the request's ``RequestRecord`` (``scope["state"]["record"]``), which the route completes from the
``RequestStats`` the facade returned, and at the end of the response (or when the client goes away) logs it and
hands it to the stats sink. It is also the last net: a ``GatewayError`` raised by an inner middleware (size
limits, load shedding) becomes its JSON answer here, and anything else a 500 with no internals.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.http.errors import note_error, outcome_for_status, send_error
from gateway.logs import ACCESS_LOGGER
from gateway.stats import RequestRecord, StatsSink

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
access_log = logging.getLogger(ACCESS_LOGGER)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def first_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by lowercase name, the first of repeated ones (as Starlette reads them)."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope.get("headers") or []:
        headers.setdefault(name, value)
    return headers


class RequestContext:
    """Request id in and out (``X-Request-ID``), the access-log record, the last net for errors."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        sink: StatsSink,
        metered: frozenset[str],
        model_for_path: Callable[[str], str],
        log_payloads: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self.sink = sink
        self.metered = metered
        self.model_for_path = model_for_path
        self.log_payloads = log_payloads
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self.clock()
        given = first_headers(scope).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        path = scope.get("path", "")
        record = RequestRecord(request_id=request_id, route=path, model=self.model_for_path(path))
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

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if not isinstance(exc, GatewayError):
                logging.getLogger("gateway.http").exception("unhandled error", extra={"request_id": request_id})
                exc = GatewayError()
            note_error(record, exc)
            if not response_started:
                await send_error(send_wrapper, exc, request_id, path)
        finally:
            if response_started and not response_done and record.error_type is None:
                record.status = "cancelled"
                record.error_type = "cancelled"
            self._finish(record, self.clock() - started)

    def _finish(self, record: RequestRecord, latency_s: float) -> None:
        record.latency_s = latency_s
        if record.error_type is None:
            record.status = outcome_for_status(record.status_code or 500)
        metered = record.route in self.metered
        if record.status in ("server_error", "timeout"):
            level = logging.WARNING
        else:
            # Probes and scrapes arrive every few seconds: they log at DEBUG and stay out of the request metrics.
            level = logging.INFO if metered else logging.DEBUG
        access_log.log(level, "request finished", extra=self._fields(record))
        if metered:
            self.sink.request_finished(record)

    def _fields(self, record: RequestRecord) -> dict[str, object]:
        fields: dict[str, object] = {
            "request_id": record.request_id,
            "route": record.route,
            "status_code": record.status_code,
            "status": record.status,
            "model": record.model,
            "latency_ms": _ms(record.latency_s),
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
        if record.quality is not None:
            fields["quality_flags"] = list(record.quality.flags)
            fields["quality_score"] = record.quality.score
        if record.key is not None:
            fields["key"] = record.key
        if record.error_type is not None:
            fields["error_type"] = record.error_type
            fields["error"] = record.error
        if self.log_payloads and record.payload:
            fields.update(record.payload)
        return fields
