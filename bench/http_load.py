"""A lean HTTP/1.1 client for the load generator: one keep-alive connection per simulated user.

The load generator runs on the same 2 cores as the gateway, so every microsecond it spends per request is taken
from the gateway, and in a burst its own pace is what the last clients wait for. aiohttp spends about 0.2 ms of
CPU per request (URL and header objects, tracing hooks, timeouts, connection pool); in the overload run that
paced a burst of 64 simultaneous requests at 0.2-0.3 ms each on the client side while the gateway answered each
429 in 0.05 ms. This client writes a ready request and parses the answer with ``httptools`` (the C parser
uvicorn uses), the way ``hey`` or ``wrk`` keep their own cost out of what they measure.

It speaks only what the benchmark needs: ``Content-Length`` bodies (the gateway's JSON answers), no redirects,
no TLS. A connection whose request timed out is closed, and the next request opens a new one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httptools
import orjson


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    # (perf_counter seconds, body bytes received so far) at each piece of the body: when a streamed event came
    marks: tuple[tuple[float, int], ...] = ()

    def json(self) -> object:
        return orjson.loads(self.body)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.marks: list[tuple[float, int]] = []
        self.size = 0

    # asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(ConnectionError("connection closed"))

    # httptools
    def on_message_begin(self) -> None:
        self.headers, self.body, self.marks, self.size = {}, [], [], 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.size += len(body)
        self.marks.append((time.perf_counter(), self.size))

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(
                Response(self.parser.get_status_code(), self.headers, b"".join(self.body), tuple(self.marks))
            )
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()  # the server said ``Connection: close``: the next request reconnects

    def _fail(self, error: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)


def _expire(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Connection:
    """One simulated user's connection: requests one at a time, reconnecting after a timeout or a close."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._protocol: _Protocol | None = None
        self._host_header = f"Host: {host}:{port}\r\n".encode()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, self._protocol = await loop.create_connection(_Protocol, self.host, self.port)

    async def post_json(self, path: str, body: object, timeout_s: float) -> Response:
        payload = orjson.dumps(body)
        head = (
            f"POST {path} HTTP/1.1\r\n".encode()
            + self._host_header
            + b"Content-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
        )
        return await self._send(head + payload, timeout_s)

    async def get(self, path: str, timeout_s: float) -> Response:
        return await self._send(f"GET {path} HTTP/1.1\r\n".encode() + self._host_header + b"\r\n", timeout_s)

    async def _send(self, request: bytes, timeout_s: float) -> Response:
        """The answer to ``request``: ``TimeoutError`` after ``timeout_s`` (reconnecting included), and
        ``ConnectionError`` if the server closed the connection before answering."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self._protocol is None or self._protocol.transport is None or self._protocol.transport.is_closing():
            await asyncio.wait_for(self.open(), timeout_s)  # idle connections time out on the server's side
        protocol = self._protocol
        assert protocol is not None and protocol.transport is not None
        assert protocol.waiter is None or protocol.waiter.done(), "one request at a time per connection"
        timeout_s -= loop.time() - started
        waiter: asyncio.Future[Response] = loop.create_future()
        protocol.waiter = waiter
        timer = loop.call_later(timeout_s, _expire, waiter)
        protocol.transport.write(request)
        try:
            return await waiter
        except BaseException:
            self.close()  # a late answer must not be read as the next request's
            raise
        finally:
            timer.cancel()

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
