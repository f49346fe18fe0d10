"""Fault handling through the real app and the real demo models: faults are injected into the real runner
(``/admin/faults``), and the circuit breaker, error classes, OOM halving, the watchdog and ``/ready`` are
checked from the outside (HTTP answers, ``/metrics``, JSON logs). The breaker's clock is a ``ManualClock``:
no test waits for a real recovery period."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import torch

from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID
from gateway.logs import json_formatter
from gateway.runners.transformers_runner import is_oom
from tests.clock import ManualClock
from tests.serving_helpers import (
    clear_fault,
    hold_worker,
    metrics,
    sample,
    scheduler_of,
    set_fault,
    settle,
    wait_queued,
    wait_until,
)

GEN = DEMO_CAUSAL_ID
TRANSITION_LOG = "circuit breaker transition"

AppClient = Callable[..., Any]


# -- helpers ------------------------------------------------------------------------------------------------


async def gen(client: httpx.AsyncClient, inputs: str = "hello", **params: Any) -> httpx.Response:
    params.setdefault("max_new_tokens", 3)
    return await client.post("/generate", json={"inputs": inputs, "parameters": params})


def assert_error(r: httpx.Response, status: int, error_type: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error_type"] == error_type, r.text


async def breaker_metrics(client: httpx.AsyncClient, model: str = GEN) -> tuple[float, dict[str, float]]:
    """(state gauge, transitions by to_state) for one model."""
    m = await metrics(client)
    transitions = {
        state: sample(m, "gateway_circuit_breaker_transitions_total", model=model, to_state=state)
        for state in ("open", "half_open", "closed")
    }
    return sample(m, "gateway_circuit_breaker_state", model=model), transitions


async def ready_state(client: httpx.AsyncClient, model: str = GEN) -> tuple[int, str]:
    r = await client.get("/ready")
    if r.status_code != 200:
        assert r.headers["retry-after"]
    return r.status_code, r.json()["components"][model]["circuit_breaker"]


def engine_of(app: Any) -> Any:
    return app.gateway.engine


async def queue_batch(client: httpx.AsyncClient, app: Any, n: int, **params: Any) -> list[asyncio.Task[httpx.Response]]:
    """Queue ``n`` identical requests behind a stalled worker, so that they form one batch when it is freed."""
    tasks = [asyncio.ensure_future(gen(client, f"request {i}", **params)) for i in range(n)]
    await wait_queued(app, n)
    return tasks


@pytest.fixture
def json_logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[..., list[dict[str, Any]]]]:
    """Log records as the gateway's JSON formatter writes them; filter by logger and message."""
    caplog.set_level(logging.INFO)
    formatter = json_formatter()

    def lines(logger: str | None = None, message: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(formatter.format(r)) for r in caplog.records]
        return [
            line
            for line in out
            if (logger is None or line["logger"] == logger) and (message is None or line["message"] == message)
        ]

    yield lines


def transitions_logged(json_logs: Callable[..., list[dict[str, Any]]]) -> list[tuple[str, str]]:
    return [
        (line["from_state"], line["to_state"])
        for line in json_logs("gateway.engine", TRANSITION_LOG)
        if line["model"] == GEN
    ]


async def timed(work: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = await work
    return r, time.monotonic() - started


# -- the fault switch ---------------------------------------------------------------------------------------


async def test_fault_routes_do_not_exist_without_the_flag(app_client: AppClient) -> None:
    async with app_client() as (client, app):
        assert (await client.post("/admin/faults", json={"kind": "error", "count": 1})).status_code == 404
        assert (await client.delete("/admin/faults")).status_code == 404
        assert engine_of(app).faults.describe() is None
        assert (await gen(client)).status_code == 200


async def test_fault_route_validates_and_describes_the_plan(app_client: AppClient) -> None:
    async with app_client(enable_faults=True) as (client, _):
        for bad in (
            {"kind": "error"},
            {"kind": "error", "count": 1, "ratio": 0.5},
            {"kind": "explode", "count": 1},
            {"kind": "error", "count": 0},
            {"kind": "error", "ratio": 1.5},
        ):
            r = await client.post("/admin/faults", json=bad)
            assert_error(r, 422, "validation")
        r = await client.post("/admin/faults", json={"kind": "stall", "count": 2, "seconds": 0.5})
        assert r.json()["fault"] == {"kind": "stall", "remaining": 2, "ratio": None, "seconds": 0.5, "injected": 0}
        assert (await client.delete("/admin/faults")).json() == {"fault": None}


async def test_ratio_fault_fails_batches_until_cleared(app_client: AppClient) -> None:
    async with app_client(enable_faults=True, breaker_failure_threshold=100) as (client, app):
        await set_fault(client, kind="error", ratio=1.0)
        for _ in range(3):
            assert_error(await gen(client), 500, "model_error")
        await clear_fault(client)
        assert (await gen(client)).status_code == 200
        assert engine_of(app).faults.injected == 3


# -- the breaker, driven by injected model errors -------------------------------------------------------------


async def test_breaker_opens_rejects_half_opens_and_closes(
    app_client: AppClient, json_logs: Callable[..., list[dict[str, Any]]]
) -> None:
    clock = ManualClock()
    async with app_client(clock=clock, enable_faults=True, breaker_failure_threshold=3, breaker_recovery_s=30) as (
        client,
        app,
    ):
        assert (await breaker_metrics(client)) == (0, {"open": 0, "half_open": 0, "closed": 0})
        await set_fault(client, kind="error", count=3)
        for i in range(3):
            assert await ready_state(client) == (200, "closed"), f"before failure {i + 1}"
            assert_error(await gen(client), 500, "model_error")

        # Open: /ready tells the load balancer, and requests are refused at once without reaching the model.
        assert await ready_state(client) == (503, "open")
        assert await breaker_metrics(client) == (2, {"open": 1, "half_open": 0, "closed": 0})
        before = await metrics(client)
        injected = engine_of(app).faults.injected
        for route in ("/generate", "/generate_stream", "/"):
            r, elapsed = await timed(client.post(route, json={"inputs": "hello", "parameters": {"max_new_tokens": 3}}))
            assert_error(r, 503, "circuit_open")
            assert int(r.headers["retry-after"]) == 30
            assert r.json()["request_id"] == r.headers["x-request-id"]
            assert elapsed < 2.0
        after = await metrics(client)
        for outcome in ("ok", "error"):
            assert sample(after, "gateway_batches_total", model=GEN, outcome=outcome) == sample(
                before, "gateway_batches_total", model=GEN, outcome=outcome
            )
        assert sample(after, "gateway_batch_size_count", model=GEN) == sample(
            before, "gateway_batch_size_count", model=GEN
        )
        assert engine_of(app).faults.injected == injected == 3
        assert sample(after, "gateway_requests_total", route="/generate", status="rejected", model=GEN) == 1

        # The other model has a breaker of its own.
        r = await client.post("/translate", json={"text": "hello", "source_lang": "en", "target_lang": "de"})
        assert r.status_code == 200, r.text
        assert (await client.get("/ready")).json()["components"][DEMO_SEQ2SEQ_ID]["circuit_breaker"] == "closed"

        # Still open just before the recovery time; half-open (and ready) after it, without sleeping.
        # (The manual clock runs with real time too: margins of seconds keep this independent of the machine.)
        clock.advance(25.0)
        assert await ready_state(client) == (503, "open")
        r = await gen(client)
        assert_error(r, 503, "circuit_open")
        assert 1 <= int(r.headers["retry-after"]) <= 5
        clock.advance(5.0)
        assert await ready_state(client) == (200, "half_open")
        assert await breaker_metrics(client) == (1, {"open": 1, "half_open": 1, "closed": 0})

        # One successful probe closes it.
        assert (await gen(client)).status_code == 200
        assert await ready_state(client) == (200, "closed")
        assert await breaker_metrics(client) == (0, {"open": 1, "half_open": 1, "closed": 1})

    assert transitions_logged(json_logs) == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    opened = next(line for line in json_logs("gateway.engine", TRANSITION_LOG) if line["to_state"] == "open")
    assert opened["level"] == "WARNING" and opened["model"] == GEN and "timestamp" in opened


async def test_failed_probe_reopens_for_longer_up_to_the_cap(
    app_client: AppClient, json_logs: Callable[..., list[dict[str, Any]]]
) -> None:
    clock = ManualClock()
    async with app_client(
        clock=clock,
        enable_faults=True,
        breaker_failure_threshold=1,
        breaker_recovery_s=10,
        breaker_max_recovery_s=25,
    ) as (client, app):
        expected_open_s = [10, 20, 25, 25]
        for trip, open_s in enumerate(expected_open_s):
            await set_fault(client, kind="error", count=1)
            assert_error(await gen(client), 500, "model_error")  # the first failure, then failed probes
            r = await gen(client)
            assert_error(r, 503, "circuit_open")
            assert int(r.headers["retry-after"]) == open_s, f"trip {trip + 1}"
            clock.advance(open_s - 3)
            assert await ready_state(client) == (503, "open")
            assert_error(await gen(client), 503, "circuit_open")
            clock.advance(3)
            assert await ready_state(client) == (200, "half_open")

        assert engine_of(app).faults.injected == len(expected_open_s)  # rejected requests never reached the model
        assert (await gen(client)).status_code == 200
        assert await ready_state(client) == (200, "closed")
        n = len(expected_open_s)
        assert await breaker_metrics(client) == (0, {"open": n, "half_open": n, "closed": 1})

        # Closing resets the recovery time.
        await set_fault(client, kind="error", count=1)
        assert_error(await gen(client), 500, "model_error")
        assert int((await gen(client)).headers["retry-after"]) == 10

    logged = transitions_logged(json_logs)
    assert logged[:3] == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]
    assert logged.count(("half_open", "closed")) == 1


async def test_half_open_admits_only_the_configured_probes(app_client: AppClient) -> None:
    clock = ManualClock()
    async with app_client(clock=clock, enable_faults=True, breaker_failure_threshold=1, breaker_recovery_s=5) as (
        client,
        app,
    ):
        await set_fault(client, kind="error", count=1)
        assert_error(await gen(client), 500, "model_error")
        clock.advance(5)
        blocker = await hold_worker(client, app)  # the one probe, held in the model
        r = await gen(client)
        assert_error(r, 503, "circuit_open")  # a second request while the probe runs is refused
        assert r.headers["retry-after"] == "1"
        await clear_fault(client)
        assert (await blocker).status_code == 200
        assert await ready_state(client) == (200, "closed")


async def test_oom_with_nothing_else_running_counts_and_repeated_ones_open_the_breaker(
    app_client: AppClient, json_logs: Callable[..., list[dict[str, Any]]]
) -> None:
    async with app_client(enable_faults=True, breaker_failure_threshold=3, breaker_recovery_s=30) as (client, app):
        await set_fault(client, kind="oom", count=1)
        assert_error(await gen(client), 500, "out_of_memory")
        # One out-of-memory error at minimum load is a failure like any other, not a trip.
        assert await ready_state(client) == (200, "closed")
        assert (await gen(client)).status_code == 200
        await settle(app)
        m = await metrics(client)
        assert sample(m, "gateway_batch_size_count", model=GEN) == 2  # not retried: nothing smaller to try
        await set_fault(client, kind="oom", count=3)
        for _ in range(3):
            assert_error(await gen(client), 500, "out_of_memory")
        assert await ready_state(client) == (503, "open")
        r = await gen(client)
        assert_error(r, 503, "circuit_open")
        assert int(r.headers["retry-after"]) == 30
        assert engine_of(app).faults.injected == 4
    assert not json_logs("gateway.scheduler", "out of memory; retrying in halves")


async def test_oom_joining_a_busy_batch_waits_for_room_and_answers_200(
    app_client: AppClient, json_logs: Callable[..., list[dict[str, Any]]]
) -> None:
    """A row whose prefill runs out of memory while other rows decode is a capacity problem: it joins again
    once rows have left, every request is answered 200 and the breaker stays closed (threshold 1)."""
    async with app_client(enable_faults=True, breaker_failure_threshold=1) as (client, app):
        long = asyncio.ensure_future(gen(client, "a long one", max_new_tokens=500))
        await wait_until(lambda: scheduler_of(app).running_rows == 1, what="the long row decoding")
        await set_fault(client, kind="oom", count=2)
        joining = await asyncio.gather(*(gen(client, f"joins {i}", max_new_tokens=4) for i in range(2)))
        assert [r.status_code for r in joining] == [200, 200], [r.text for r in joining]
        assert (await long).status_code == 200
        assert await ready_state(client) == (200, "closed")
        assert engine_of(app).faults.injected == 2
    assert json_logs("gateway.scheduler", "out of memory joining a busy batch; retrying once rows have left")


async def test_oom_mid_stream_at_batch_size_one_trips_the_breaker(
    app_client: AppClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with app_client(breaker_failure_threshold=5) as (client, app):
        model = engine_of(app).generation.runner.model
        real_forward = model.forward
        calls = 0

        def forward(*args: Any, **kwargs: Any) -> Any:
            """Runs out of memory at the third forward pass (prefill, step, step): two tokens were chosen."""
            nonlocal calls
            calls += 1
            if calls == 3:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real_forward(*args, **kwargs)

        monkeypatch.setattr(model, "forward", forward)
        r = await client.post("/generate_stream", json={"inputs": "hello", "parameters": {"max_new_tokens": 10}})
        assert r.status_code == 200
        events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
        assert [e["token"]["id"] >= 0 for e in events[:-1]] == [True, True]  # both tokens, then the error
        assert events[-1]["error_type"] == "out_of_memory"
        assert await ready_state(client) == (200, "closed")  # counted once, under the threshold of 5


async def test_oom_mid_generation_runs_rows_not_streamed_again(
    app_client: AppClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with app_client(enable_faults=True, breaker_failure_threshold=1) as (client, app):
        alone = [(await gen(client, f"request {i}", max_new_tokens=6)).json()["generated_text"] for i in range(2)]
        model = engine_of(app).generation.runner.model
        real_forward = model.forward
        calls = 0

        def forward(*args: Any, **kwargs: Any) -> Any:
            """The 4th forward pass runs out of memory: the blocker's prefill, the pair's prefill, a step, then this
            one, after both rows of the pair have chosen two tokens."""
            nonlocal calls
            calls += 1
            if calls == 4:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real_forward(*args, **kwargs)

        blocker = await hold_worker(client, app, max_new_tokens=1)  # answered as it joins: one forward pass
        tasks = await queue_batch(client, app, 2, max_new_tokens=6)
        monkeypatch.setattr(model, "forward", forward)
        await clear_fault(client)
        assert (await blocker).status_code == 200
        responses = await asyncio.gather(*tasks)
        # Their clients had seen nothing: each row ran again alone, from its prompt, to the same answer.
        assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
        assert [r.json()["generated_text"] for r in responses] == alone
        assert calls > 4
        assert await ready_state(client) == (200, "closed")


@pytest.mark.parametrize(
    ("oom_batches", "halved", "final_sizes", "attempts"),
    [
        # attempts: every generate call, the stalled single request first
        (1, [8], [4] * 8, [1, 8, 4, 4]),  # 8 -> 4 + 4
        (2, [8, 4], [2] * 4 + [4] * 4, [1, 8, 4, 2, 2, 4]),  # 8 -> (4 -> 2 + 2) + 4
    ],
)
async def test_oom_on_a_batch_of_8_is_retried_in_halves(
    app_client: AppClient,
    json_logs: Callable[..., list[dict[str, Any]]],
    oom_batches: int,
    halved: list[int],
    final_sizes: list[int],
    attempts: list[int],
) -> None:
    # Room for the blocker's row beside the 8, which then join as one group.
    async with app_client(enable_faults=True, breaker_failure_threshold=1, max_batch_size=9) as (client, app):
        blocker = await hold_worker(client, app, max_new_tokens=1)  # answered as it joins: decodes beside nobody
        tasks = await queue_batch(client, app, 8)
        await set_fault(client, kind="oom", count=oom_batches)  # replaces the stall, which frees the worker
        assert (await blocker).status_code == 200
        responses = await asyncio.gather(*tasks)
        assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]

        # The batch of 8 ran once and failed; its halves (and theirs) ran until they fit.
        assert [line["batch_size"] for line in json_logs("gateway.scheduler", "out of memory; retrying in halves")] == (
            halved
        )
        access = {line["request_id"]: line for line in json_logs("gateway.access", "request finished")}
        sizes = sorted(access[r.headers["x-request-id"]]["batch_size"] for r in responses)
        assert sizes == sorted(final_sizes)
        await settle(app)  # the last batch is counted just after its rows are answered
        m = await metrics(client)
        assert sample(m, "gateway_batch_size_count", model=GEN) == len(attempts)
        assert sample(m, "gateway_batch_size_sum", model=GEN) == sum(attempts)
        assert sample(m, "gateway_batch_size_bucket", model=GEN, le="4.0") == len(attempts) - 1  # all but the 8
        assert sample(m, "gateway_batches_total", model=GEN, outcome="error") == oom_batches

        # The requests succeeded, so nothing counted towards the breaker (its threshold is 1).
        assert await ready_state(client) == (200, "closed")
        assert engine_of(app).faults.injected == 1 + oom_batches


async def test_oom_down_to_single_rows_fails_them_and_counts(app_client: AppClient) -> None:
    async with app_client(enable_faults=True, breaker_failure_threshold=2) as (client, app):
        blocker = await hold_worker(client, app, max_new_tokens=1)  # answered as it joins: nothing else decodes
        tasks = await queue_batch(client, app, 2)
        await set_fault(client, kind="oom", count=100)
        assert (await blocker).status_code == 200
        for r in await asyncio.gather(*tasks):
            assert_error(r, 500, "out_of_memory")
        assert engine_of(app).faults.injected == 1 + 3  # 2, then 1 and 1 (the other half waits: it is not running)
        assert await ready_state(client) == (503, "open")  # two failures, the threshold


async def test_a_row_left_without_a_distribution_fails_alone_with_a_4xx(
    app_client: AppClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NaN logits for one row of a batch (what an extreme setting can cause): that request gets a 422 of its
    own, the other row of the same batch answers 200, and the breaker (threshold 1) does not move."""
    async with app_client(enable_faults=True, breaker_failure_threshold=1) as (client, app):
        model = engine_of(app).generation.runner.model
        real_forward = model.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            out = real_forward(*args, **kwargs)
            if out.logits.shape[0] == 2:  # the pair's forward passes: the first row's scores are not numbers
                out.logits[0] = float("nan")
            return out

        blocker = await hold_worker(client, app, max_new_tokens=1)
        tasks = await queue_batch(client, app, 2, max_new_tokens=4)
        monkeypatch.setattr(model, "forward", forward)
        await clear_fault(client)
        assert (await blocker).status_code == 200
        first, second = await asyncio.gather(*tasks)
        assert_error(first, 422, "validation")
        assert "no valid distribution" in first.json()["error"]
        assert second.status_code == 200 and len(second.json()["generated_text"]) > 0
        assert await ready_state(client) == (200, "closed")


async def test_model_error_fails_every_request_of_its_batch_only(app_client: AppClient) -> None:
    async with app_client(enable_faults=True, breaker_failure_threshold=10) as (client, app):
        blocker = await hold_worker(client, app)
        tasks = await queue_batch(client, app, 3)
        await set_fault(client, kind="error", count=1)
        assert (await blocker).status_code == 200
        for r in await asyncio.gather(*tasks):
            assert_error(r, 500, "model_error")
        assert (await gen(client)).status_code == 200
        m = await metrics(client)
        assert sample(m, "gateway_requests_total", route="/generate", status="server_error", model=GEN) == 3
        assert sample(m, "gateway_batches_total", model=GEN, outcome="error") == 1
        assert await ready_state(client) == (200, "closed")


# -- hung generations ---------------------------------------------------------------------------------------


async def test_stalled_worker_is_replaced_and_its_requests_answered(
    app_client: AppClient, json_logs: Callable[..., list[dict[str, Any]]]
) -> None:
    # The watchdog leaves real generations (a few ms here) ample room even on a loaded machine.
    async with app_client(enable_faults=True, watchdog_s=2.0, breaker_failure_threshold=5) as (client, app):
        started = time.monotonic()
        stalled = await hold_worker(client, app)  # a 60 s stall, far past the watchdog
        queued = asyncio.ensure_future(gen(client, "queued behind it"))
        r = await stalled
        elapsed = time.monotonic() - started
        assert_error(r, 500, "worker_stalled")
        assert 2.0 <= elapsed < 8.0
        r = await queued
        assert r.status_code == 200, r.text  # served by the new worker thread

        m = await metrics(client)
        assert sample(m, "gateway_worker_restarts_total", model=GEN) == 1
        assert sample(m, "gateway_workers_alive", model=GEN) == 1
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["components"][GEN]["workers_alive"] == 1
        r = await gen(client)
        assert r.status_code == 200, r.text
        assert [line["batch_size"] for line in json_logs("gateway.scheduler", "worker stalled; replacing it")] == [1]


async def test_hung_generations_count_towards_the_breaker(app_client: AppClient) -> None:
    async with app_client(enable_faults=True, watchdog_s=0.5, breaker_failure_threshold=2) as (client, app):
        for _ in range(2):
            await settle(app)
            assert_error(await (await hold_worker(client, app)), 500, "worker_stalled")
        assert await ready_state(client) == (503, "open")


async def test_deadline_passed_mid_generation_counts_but_not_while_queued(app_client: AppClient) -> None:
    async with app_client(enable_faults=True, breaker_failure_threshold=2) as (client, app):
        # A deadline that passes while the request is still queued says nothing about the model.
        blocker = await hold_worker(client, app, timeout_s=30)
        for _ in range(3):
            assert_error(await gen(client, timeout_s=0.05), 504, "timeout")
        await clear_fault(client)
        assert (await blocker).status_code == 200
        assert await ready_state(client) == (200, "closed")

        # One that passes while the model works on it does count.
        for _ in range(2):
            await settle(app)
            assert_error(await (await hold_worker(client, app, timeout_s=0.5)), 504, "timeout")
            await clear_fault(client)
        assert await ready_state(client) == (503, "open")


# -- bad input ----------------------------------------------------------------------------------------------


async def test_bad_input_never_moves_the_breaker(app_client: AppClient) -> None:
    clock = ManualClock()
    async with app_client(
        clock=clock, enable_faults=True, breaker_failure_threshold=1, breaker_recovery_s=5, max_input_tokens=16
    ) as (client, app):

        async def bad_requests() -> None:
            assert_error(await gen(client, temperature=-1), 422, "validation")
            assert_error(await gen(client, best_of=3), 422, "validation")
            assert_error(await gen(client, max_new_tokens=10_000), 422, "validation")
            assert_error(await gen(client, "x" * 100), 413, "payload_too_large")
            r = await client.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
            assert_error(r, 422, "validation")
            r = await client.post("/generate_stream", json={"inputs": "x" * 100, "parameters": {}})
            assert_error(r, 413, "payload_too_large")
            for target in ("tlh", "sw"):  # not ISO 639-1; not supported by the demo model
                r = await client.post("/translate", json={"text": "hi", "source_lang": "en", "target_lang": target})
                assert_error(r, 422, "validation")

        for _ in range(3):
            await bad_requests()
        assert await ready_state(client) == (200, "closed")
        assert await breaker_metrics(client) == (0, {"open": 0, "half_open": 0, "closed": 0})
        assert engine_of(app).generation.scheduler.queue.depth == 0

        # The threshold is 1: one real model failure opens it.
        await set_fault(client, kind="error", count=1)
        assert_error(await gen(client), 500, "model_error")
        assert await ready_state(client) == (503, "open")

        # Half-open: bad input neither closes nor reopens it, nor uses up the probe.
        clock.advance(5)
        assert await ready_state(client) == (200, "half_open")
        await bad_requests()
        assert await ready_state(client) == (200, "half_open")
        assert (await gen(client)).status_code == 200
        assert await ready_state(client) == (200, "closed")
        assert engine_of(app).faults.injected == 1


# -- OOM classification -------------------------------------------------------------------------------------


def test_cuda_and_cpu_out_of_memory_are_classified_as_oom() -> None:
    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    assert is_oom(
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)"
        )
    )
    with pytest.raises(RuntimeError) as real:  # a real CPU allocation failure (1 PiB), as torch raises it
        torch.empty(2**50, dtype=torch.uint8)
    assert is_oom(real.value)
    assert is_oom(MemoryError())  # Python's own allocation failure (a tokenizer, a list) on the worker thread
    assert not is_oom(RuntimeError("shape mismatch: [2, 3] vs [3, 2]"))
    assert not is_oom(ValueError("out of memory"))
