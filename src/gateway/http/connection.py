"""uvicorn's httptools connection protocol, with limits that hold while a request's bytes arrive.

uvicorn sets no cap on a request's head when it parses with httptools (h11's ``h11_max_incomplete_event_size``
does not apply), and the gateway's own 431 (``SizeLimits``) can only run once every header has arrived and been
parsed: a 96 MB header costs seconds of event-loop CPU first. Here each connection counts the bytes of a request's
head (request line and headers) as they arrive and feeds the parser no more than the cap:

- a request target over ``max_url_bytes``: 414, and the connection is closed;
- a head over ``max_header_bytes``: 431, and the connection is closed;
- a head not complete within ``header_timeout_s`` (from the connection, or from the first byte of a later request
  on it): 408 and closed; a new connection that sent nothing is just closed;
- a request on a connection beyond ``max_connections``: 503 (``Retry-After``), and that connection is closed;
- a response finished before its request's body (an early 413, say): the connection is closed rather than kept
  to read the rest.

The body's own deadline is ``SizeLimits``'s (it answers through the app: request id, access log). Answers are the
gateway's JSON error body; a refused head never reaches the app, so it is logged here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.errors import GatewayError, HeadersTooLarge, RequestTimeout, TooManyConnections, URITooLong
from gateway.http.errors import error_body, send_error
from gateway.http.responses import dumps

log = logging.getLogger("gateway.http.connection")


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 16_384
    max_url_bytes: int = 8192
    header_timeout_s: float = 10.0
    max_connections: int = 1000


def raw_error_response(error: GatewayError, path: str = "") -> bytes:
    """``error`` as a whole HTTP/1.1 response that closes the connection (for answers outside any app), in the
    error shape of ``path`` (as much of the request target as arrived)."""
    request_id = uuid.uuid4().hex
    body = dumps(error_body(error, request_id, path))
    head = [
        STATUS_LINE[error.status_code],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"x-request-id: " + request_id.encode() + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


async def _too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    await send_error(send, TooManyConnections(retry_after=1.0), uuid.uuid4().hex, scope.get("path", ""))


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with the limits of the module docstring (``limits``: set by ``limited_protocol``)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request's head (or waiting for the next one's first byte)
        self._head_bytes = 0
        self._url_bytes = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        while data and not self._refused:
            if not self._in_head:
                # A body; a pipelined request's head inside it is bounded by the size of one read.
                super().data_received(data)
                return
            room = self.limits.max_header_bytes - self._head_bytes
            if room <= 0:
                self._refuse(HeadersTooLarge(f"the request head is over {self.limits.max_header_bytes} bytes"))
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing():
                return
            if self._url_over:
                self._refuse(URITooLong(f"the request target is over {self.limits.max_url_bytes} bytes"))
                return

    # -- parser callbacks --

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = 0
        if self._head_timer is None:
            self._arm_head_timer()

    @property
    def _url_over(self) -> bool:
        return self._url_bytes > self.limits.max_url_bytes

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if not self._url_over:
            super().on_url(url)

    # A request whose target is over the cap never starts: data_received answers 414 after this read.

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        if self._url_over:
            return
        if len(self.connections) <= self.limits.max_connections:
            super().on_headers_complete()
            return
        app, self.app = self.app, _too_many_connections
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_body(self, body: bytes) -> None:
        if not self._url_over:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._url_over:
            return
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        if not self._in_head and not self.transport.is_closing():
            self.transport.close()  # the response went out before the request's body: do not read the rest
        super().on_response_complete()

    # -- limits --

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing of a request arrived: no one to answer
            return
        self._refuse(RequestTimeout(f"the request head did not arrive within {self.limits.header_timeout_s:g} s"))

    def _refuse(self, error: GatewayError) -> None:
        """Answer ``error`` and close, or, with a response under way (pipelining), close once it is sent."""
        self._refused = True
        self._cancel_head_timer()
        log.info("request refused", extra={"status_code": error.status_code, "error_type": error.error_type})
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            return
        target = bytes(getattr(self, "url", b""))  # set once a request began
        self.transport.write(raw_error_response(error, target.decode("latin-1")))
        self.transport.close()


def limited_protocol(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """A protocol class bound to ``limits``, for ``uvicorn.Config(http=...)``."""
    return type("GatewayHttpProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
