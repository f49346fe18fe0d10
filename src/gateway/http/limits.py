"""Pure-ASGI middleware: caps on the size of a request's headers (431) and body (413), and the body's time (408).

The declared ``Content-Length`` is checked before anything is read, and the bytes of the body as they arrive
(a chunked body has no declared length). The whole body must arrive within ``body_timeout_s`` of the app's first
read, or the request is answered 408 and its connection closed: a client that stops sending mid-body does not
hold its connection (and its request) for good. An over-limit or late request raises its ``GatewayError``,
which the request context (or the route's error handler) answers.

The header cap here is a second net: on a real server the connection protocol (``gateway.http.connection``)
refuses an oversized head while it arrives, before it is parsed.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import HeadersTooLarge, PayloadTooLarge, RequestTimeout


class SizeLimits:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int, body_timeout_s: float = 30.0
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        if sum(len(k) + len(v) + 4 for k, v in headers) > self.max_header_bytes:
            raise HeadersTooLarge(f"headers are over the limit of {self.max_header_bytes} bytes")
        length = next((v for k, v in headers if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            raise self._too_large()
        received = 0
        body_done = False
        deadline: float | None = None

        async def receive_counted() -> Message:
            nonlocal received, body_done, deadline
            if body_done:  # later reads wait for the client to go away: no deadline on those
                return await receive()
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.body_timeout_s
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(f"the body did not arrive within {self.body_timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large()
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        await self.app(scope, receive_counted, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the body is over the limit of {self.max_body_bytes} bytes")
