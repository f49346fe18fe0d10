"""A client that goes away cancels its work: dropped from the queue, or stopped within a few decoding steps,
counted as cancelled, while the other rows of its batch go on.

These tests need real connections, so the real app runs under a real uvicorn server on loopback (in the test's
event loop), and clients are raw sockets that close when the test says so. To see how far a cancelled row got,
the runner's ``generate`` is wrapped by a spy that only records the rows it was given: the model still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.runners.base import Row
from gateway.settings import Settings
from tests.conftest import free_port
from tests.integration.conftest import wait_ready
from tests.serving_helpers import (
    GEN,
    batches,
    clear_fault,
    hold_worker,
    metrics,
    requests_by_status,
    settle,
    wait_queued,
    wait_until,
)


class RowSpy:
    """Wraps a runner's ``submit``: keeps every batch's rows so a test can read how many tokens each emitted."""

    def __init__(self, runner: Any) -> None:
        self.batches: list[Sequence[Row]] = []
        self._submit = runner.submit
        self._lock = threading.Lock()
        runner.submit = self

    def __call__(self, rows: Sequence[Row]) -> Any:
        with self._lock:
            self.batches.append(rows)
        return self._submit(rows)

    def row_for(self, prompt_ids: list[int]) -> Row:
        with self._lock:
            return next(r for batch in self.batches for r in batch if r.input_ids == prompt_ids)


class LiveServer:
    def __init__(self, app: Any, url: str) -> None:
        self.app = app
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.client = httpx.AsyncClient(base_url=url, timeout=30)
        runner = app.gateway.engine.services[GEN].runner
        self.spy = RowSpy(runner)
        self.encode = runner.encode


@pytest.fixture
def live_server(make_settings: Callable[..., Settings]) -> Callable[..., Any]:
    """Factory: ``async with live_server(**settings) as server``: the real app under uvicorn on loopback."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[LiveServer]:
        app = create_app(make_settings(**overrides), registry=CollectorRegistry())
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
        server = uvicorn.Server(config)
        serving = asyncio.ensure_future(server.serve())
        try:
            await wait_until(lambda: server.started or serving.done(), timeout_s=60, what="uvicorn to start")
            assert not serving.done()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as probe:
                await wait_ready(probe)
            live = LiveServer(app, f"http://127.0.0.1:{port}")
            async with live.client:
                yield live
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, timeout=30)

    return start


class RawClient:
    """One HTTP/1.1 request on its own socket, which the test closes whenever it likes (a client going away)."""

    def __init__(self, port: int, path: str, body: bytes) -> None:
        self.port = port
        self.request = (
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(self.request)
        await self.writer.drain()

    async def read_until(self, marker: bytes) -> bytes:
        assert self.reader is not None
        return await asyncio.wait_for(self.reader.readuntil(marker), timeout=30)

    async def close(self) -> None:
        assert self.writer is not None
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def body(prompt: str, **params: Any) -> bytes:
    return httpx.Request("POST", "/", json={"inputs": prompt, "parameters": params}).read()


async def cancelled_count(server: LiveServer, route: str) -> int:
    return requests_by_status(await metrics(server.client), "cancelled", route=route)


@pytest.mark.parametrize("route", ["/generate", "/generate_stream"])
async def test_a_disconnect_stops_the_row_and_leaves_its_batch_mates_alone(
    live_server: Callable[..., Any], route: str
) -> None:
    async with live_server(enable_faults=True, max_new_tokens_limit=4000) as server:
        client = server.client
        blocker = await hold_worker(client, server.app)
        leaving = RawClient(server.port, route, body("leaving", max_new_tokens=4000))
        await leaving.send()
        staying = asyncio.ensure_future(
            client.post("/generate", json={"inputs": "staying", "parameters": {"max_new_tokens": 60, "details": True}})
        )
        await wait_queued(server.app, 2)
        await clear_fault(client)
        assert (await blocker).status_code == 200

        # The two share a batch; once the leaving row has produced tokens, its client goes away.
        await wait_until(lambda: len(server.spy.batches) == 2, what="the shared batch")
        row = server.spy.row_for(server.encode("leaving"))
        assert len(server.spy.batches[1]) == 2
        if route == "/generate_stream":
            await leaving.read_until(b"data:")  # a token reached the client
        await wait_until(lambda: row.emitted_tokens > 0, what="the first tokens")
        await leaving.close()

        await wait_until(lambda: row.done, timeout_s=10, what="the row to stop")
        kept = await staying
        assert kept.status_code == 200 and kept.json()["details"]["generated_tokens"] == 60
        await settle(server.app)
        assert row.emitted_tokens < 4000  # stopped long before its max_new_tokens
        await wait_until_counted(server, route)


async def wait_until_counted(server: LiveServer, route: str) -> None:
    until = asyncio.get_running_loop().time() + 10
    while await cancelled_count(server, route) != 1:
        assert asyncio.get_running_loop().time() < until, "the cancellation was not counted"
        await asyncio.sleep(0.02)


async def test_a_disconnect_while_queued_drops_the_request_before_compute(live_server: Callable[..., Any]) -> None:
    async with live_server(enable_faults=True) as server:
        client = server.client
        blocker = await hold_worker(client, server.app)
        before = batches(await metrics(client))
        leaving = RawClient(server.port, "/generate", body("never computed", max_new_tokens=50))
        await leaving.send()
        await wait_queued(server.app, 1)
        await leaving.close()
        await wait_until_counted(server, "/generate")

        await clear_fault(client)
        assert (await blocker).status_code == 200
        await settle(server.app)
        after = batches(await metrics(client))
        assert (after[0] - before[0], after[1] - before[1]) == (1, 1)  # only the blocker's batch ran
        assert all(r.input_ids != server.encode("never computed") for b in server.spy.batches for r in b)
