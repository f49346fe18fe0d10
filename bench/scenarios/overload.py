"""Overload: more closed-loop clients than the gateway's queue holds; every request must end in 200 or 429, the
429s at once (under 20 ms), and nothing may hang."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.http_load import Connection
from bench.systems import System, close_all, gateway
from bench.workload import OVERLOAD_CLIENTS, OVERLOAD_SETTINGS, prompts


@dataclass
class Overload:
    """What the overload's clients got."""

    accepted: int = 0
    rejected: int = 0
    other: dict[str, int] = field(default_factory=dict)
    hung: int = 0
    rejected_latencies: list[float] = field(default_factory=list)
    missing_retry_after: int = 0

    @property
    def ok(self) -> bool:
        return (
            not self.other
            and not self.hung
            and not self.missing_retry_after
            and self.accepted > 0
            and self.rejected > 0
            and max(self.rejected_latencies) < 0.020
        )

    def count_other(self, what: str) -> None:
        self.other[what] = self.other.get(what, 0) + 1


@dataclass(frozen=True)
class _Plan:
    """What every client of one overload run shares."""

    system: System
    pool: list[str]
    stop_at: float
    max_new_tokens: int
    hang_s: float


async def _polite_user(plan: _Plan, conn: Connection, index: int, result: Overload) -> None:
    """Sends its next request as soon as one is answered, or once the ``Retry-After`` of a 429 has passed."""
    k = 0
    while time.perf_counter() < plan.stop_at:
        prompt = plan.pool[(index + k) % len(plan.pool)]
        k += 1
        sent = time.perf_counter()
        try:
            r = await plan.system.generate(conn, prompt, plan.max_new_tokens, timeout_s=plan.hang_s)
        except TimeoutError:
            result.hung += 1
            continue
        except ConnectionError:
            result.count_other("connection closed")
            continue
        latency = time.perf_counter() - sent
        if r.status == 200:
            result.accepted += 1
        elif r.status == 429:
            result.rejected += 1
            result.rejected_latencies.append(latency)
            retry_after = r.headers.get("retry-after")
            if retry_after is None:
                result.missing_retry_after += 1
            await asyncio.sleep(min(float(retry_after or 1), max(plan.stop_at - time.perf_counter(), 0)))
        else:
            result.count_other(str(r.status))


async def run_overload(system: System, max_new_tokens: int, duration_s: float, hang_s: float = 30.0) -> Overload:
    """``OVERLOAD_CLIENTS`` closed-loop clients against a small queue. A refused client waits as ``Retry-After``
    says (a polite client) and tries again; an answered one sends its next request at once, so the queue stays
    full and about half of the clients are being refused at any time."""
    result = Overload()
    pool = prompts(256)
    # The connections are opened first: that time must not count as the gateway's.
    conns = await system.connections(OVERLOAD_CLIENTS)
    try:
        plan = _Plan(system, pool, time.perf_counter() + duration_s, max_new_tokens, hang_s)
        await asyncio.gather(*(_polite_user(plan, conns[i], i, result) for i in range(OVERLOAD_CLIENTS)))
    finally:
        close_all(conns)
    return result


def overload_run(cache: Path, log: Path, model: str, max_new_tokens: int, duration_s: float) -> Overload:
    """The overload on a fresh gateway whose queue holds ``OVERLOAD_QUEUE`` rows, its JSON log in ``log``."""
    with gateway(cache, log, model, OVERLOAD_SETTINGS) as system:
        asyncio.run(system.warm(max_new_tokens))
        return asyncio.run(run_overload(system, max_new_tokens, duration_s))
