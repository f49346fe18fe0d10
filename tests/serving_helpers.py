"""Helpers shared by the serving-core tests (batching, admission, streaming, cancellation, drain).

They drive the real app (``app_client``) or a real server, and observe it from the outside: HTTP answers,
``/metrics``, SSE events. Where a test needs the worker held still, it uses the contract's stall fault, which the
real runner sleeps in until the fault plan is cleared.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.demo import DEMO_CAUSAL_ID

GEN = DEMO_CAUSAL_ID

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def gen(client: httpx.AsyncClient, inputs: str = "hello", **params: Any) -> httpx.Response:
    params.setdefault("max_new_tokens", 8)
    return await client.post("/generate", json={"inputs": inputs, "parameters": params})


def parse_metrics(text: str) -> Metrics:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def metrics(client: httpx.AsyncClient) -> Metrics:
    r = await client.get("/metrics")
    assert r.status_code == 200
    return parse_metrics(r.text)


def sample(m: Metrics, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist yet (a labelled counter never incremented)."""
    return m.get((name, frozenset(labels.items())), 0.0)


def batches(m: Metrics, model: str = GEN) -> tuple[int, int]:
    """(batches run, rows in them) for one model, from the ``gateway_batch_size`` histogram."""
    count = sample(m, "gateway_batch_size_count", model=model)
    total = sample(m, "gateway_batch_size_sum", model=model)
    return int(count), int(total)


def requests_by_status(m: Metrics, status: str, route: str = "/generate", model: str = GEN) -> int:
    return int(sample(m, "gateway_requests_total", route=route, status=status, model=model))


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    """A bounded poll (never a fixed sleep): fails the test if ``predicate`` stays false."""
    until = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def scheduler_of(app: Any, model: str = GEN) -> Any:
    return app.gateway.engine.services[model].scheduler


async def set_fault(client: httpx.AsyncClient, **plan: Any) -> None:
    r = await client.post("/admin/faults", json=plan)
    assert r.status_code == 200, r.text


async def clear_fault(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/admin/faults")).status_code == 200


async def hold_worker(client: httpx.AsyncClient, app: Any, **params: Any) -> asyncio.Task[httpx.Response]:
    """Stall the generation worker inside a one-row batch until ``clear_fault``; return that blocking request."""
    engine = app.gateway.engine
    taken = engine.faults.injected
    await set_fault(client, kind="stall", count=1, seconds=60)
    blocker = asyncio.ensure_future(gen(client, "block", **params))
    await wait_until(lambda: engine.faults.injected == taken + 1, what="the stall to start")
    return blocker


async def wait_queued(app: Any, rows: int, model: str = GEN) -> None:
    queue = scheduler_of(app, model).queue
    await wait_until(lambda: queue.depth == rows, what=f"{rows} queued rows")


async def settle(app: Any) -> None:
    """Wait until no row is queued or running: a batch's stats are recorded just after its rows are answered."""
    schedulers = [s.scheduler for s in app.gateway.engine.services.values()]
    await wait_until(lambda: not any(s.running_rows or s.queue.depth for s in schedulers), what="idle workers")


def sse_events(body: str) -> list[dict[str, Any]]:
    """The ``data:`` events of a Server-Sent Events body, decoded."""
    events = []
    for block in body.split("\n\n"):
        block = block.strip()
        if not block:
            continue
        assert block.startswith("data:"), block
        events.append(json.loads(block[len("data:") :]))
    return events


class KeepOutcome:
    """A row's ``RowSink`` for tests that drive a runner directly: keeps the outcome, counts streamed tokens and
    sets ``done`` once answered."""

    def __init__(self) -> None:
        self.outcome: Any = None
        self.tokens = 0
        self.done = threading.Event()

    def cancelled(self) -> bool:
        return False

    def on_token(self, token: Any) -> None:
        self.tokens += 1

    def on_done(self, outcome: Any) -> None:
        self.outcome = outcome
        self.done.set()
