"""The mixed workload on one system: a fixed list of requests of many lengths, sent by closed-loop clients.

Each of ``concurrency`` users takes the next request of the list as soon as its last one is answered, until the
list is done. Throughput is the generated tokens every answer reports over the time from the first request to the
last answer; latency is per request, to the last byte. Time to first token comes from the streamed requests of
the mix (every ``stream_every``-th): the arrival of the first server-sent event that carries a token. A system
that cannot stream (or whose stream fails on this model) is sent those requests unstreamed, and has no TTFT.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.http_load import Response
from bench.systems import System, close_all
from bench.workload import BATCH, Mixed


@dataclass
class MixedResult:
    """One system's pass over the mix."""

    wall_s: float = 0.0
    tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    stream_error: str | None = None  # why the system's streams were not used, if they were not
    server_cpu_s: float = 0.0

    @property
    def throughput(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0


def sse_events(response: Response) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, data) of every JSON ``data:`` event of a server-sent-event body."""
    out = []
    offset = 0
    for block in response.body.split(b"\n\n"):
        offset += len(block) + 2
        for line in block.splitlines():
            if line.startswith(b"data:") and line[5:].strip() not in (b"", b"[DONE]"):
                arrived = next((t for t, size in response.marks if size >= min(offset, len(response.body))), 0.0)
                out.append((arrived, orjson.loads(line[5:])))
    return out


async def probe_stream(system: System) -> str | None:
    """``None`` if the system streams a short generation, else why not (its status and the start of its body)."""
    request = system.wire.stream_request("probe", 4)
    if request is None:
        return "no streaming route"
    (conn,) = await system.connections(1)
    try:
        r = await conn.post_json(*request, timeout_s=120.0)
    finally:
        conn.close()
    if r.status == 200 and any(system.wire.token_event(e) for _, e in sse_events(r)):
        return None
    return f"{r.status}: {r.body[:120].decode(errors='replace')}"


async def _user(system: System, queue: list[tuple[str, int, bool]], conn: Any, result: MixedResult) -> None:
    wire = system.wire
    while queue:
        prompt, max_new_tokens, streamed = queue.pop()
        request = wire.stream_request(prompt, max_new_tokens) if streamed and not result.stream_error else None
        sent = time.perf_counter()
        r = await conn.post_json(*(request or wire.request(prompt, max_new_tokens, True)), timeout_s=300.0)
        if r.status != 200:
            result.errors[str(r.status)] = result.errors.get(str(r.status), 0) + 1
            continue
        result.latencies.append(time.perf_counter() - sent)
        if request is None:
            result.tokens += wire.generated_tokens(r.json())
            continue
        tokens = [t for t, e in sse_events(r) if wire.token_event(e)]
        result.tokens += len(tokens)
        if tokens:
            result.ttfts.append(tokens[0] - sent)


async def run_mixed(system: System, workload: Mixed, concurrency: int = BATCH) -> MixedResult:
    """The whole mix on ``system`` by ``concurrency`` closed-loop users."""
    result = MixedResult(stream_error=await probe_stream(system))
    queue = list(reversed(workload.requests()))
    conns = await system.connections(concurrency)
    try:
        cpu, started = system.server.cpu_s(), time.perf_counter()
        await asyncio.gather(*(_user(system, queue, c, result) for c in conns))
        result.wall_s = time.perf_counter() - started
        result.server_cpu_s = system.server.cpu_s() - cpu
    finally:
        close_all(conns)
    return result
