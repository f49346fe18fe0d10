"""The load generator's HTTP client (``bench/http_load.py``) against a real gateway on loopback.

``make bench`` is not run by CI, so this is what keeps its client honest: answers and statuses parsed, headers
read, several requests on one keep-alive connection, and a request the gateway holds ending in ``TimeoutError``
(what the overload run counts as hung) with the next request on a fresh connection. On the way it shows a
queued request whose client gave up freeing its queue slot at once, while the worker is still busy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from bench.gateway_process import ServerProcess
from bench.http_load import Connection


async def until_cancelled(admin: httpx.AsyncClient) -> None:
    for _ in range(200):
        text = (await admin.get("/metrics")).text
        if 'route="/generate",status="cancelled"} 1.0' in text:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the timed-out request was not cancelled")


@pytest.mark.e2e
def test_the_bench_client_reads_answers_refusals_and_times_out_on_held_requests(
    gateway_server: Callable[..., ServerProcess],
) -> None:
    server = gateway_server(enable_faults="true", max_queue=1, max_batch_size=1)

    async def scenario(admin: httpx.AsyncClient) -> None:
        conn = Connection("127.0.0.1", server.port)
        await conn.open()
        body = {"inputs": "hello", "parameters": {"max_new_tokens": 3, "details": True}}
        first = await conn.post_json("/generate", body, timeout_s=30)
        again = await conn.post_json("/generate", body, timeout_s=30)  # the same connection
        assert first.status == again.status == 200 and first.json() == again.json()
        answer = first.json()
        assert isinstance(answer, dict) and answer["details"]["generated_tokens"] == 3
        assert first.headers["content-type"] == "application/json" and first.headers["x-request-id"]
        health = await conn.get("/health", timeout_s=30)
        assert health.status == 200

        # A stalled worker holds one request. The next one waits in the queue until its client gives up; once
        # another takes the queue's only slot, a third is refused.
        stall = {"kind": "stall", "count": 1, "seconds": 30}
        assert (await admin.post("/admin/faults", json=stall)).status_code == 200
        held, queued, timed_out, refused_conn = (Connection("127.0.0.1", server.port) for _ in range(4))
        held_answer = asyncio.ensure_future(held.post_json("/generate", body, timeout_s=30))
        await asyncio.sleep(0.5)
        with pytest.raises(TimeoutError):
            await timed_out.post_json("/generate", body, timeout_s=0.5)
        await until_cancelled(admin)  # its connection closed: the gateway drops it and frees its slot
        queued_answer = asyncio.ensure_future(queued.post_json("/generate", body, timeout_s=30))
        await asyncio.sleep(0.5)
        refused = await refused_conn.post_json("/generate", body, timeout_s=30)
        assert refused.status == 429 and refused.headers["retry-after"] == "1"
        error = refused.json()
        assert isinstance(error, dict) and error["error_type"] == "queue_full"

        assert (await admin.delete("/admin/faults")).status_code == 200
        assert [(await a).json() for a in (held_answer, queued_answer)] == [answer, answer]
        after = await timed_out.post_json("/generate", body, timeout_s=30)  # on a new connection
        assert after.status == 200 and after.json() == answer
        for c in (conn, held, queued, timed_out, refused_conn):
            c.close()

    async def main() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as admin:
            await scenario(admin)

    asyncio.run(main())
