"""The periodic canary runner, driven with an injected sender, clocks and sleep (no real waiting).

The sender here is the seam the gateway fills with a request through its full serving path; the real-app
test (test_demo_canaries.py) sends through the real app."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.quality.canary import parse_canaries
from gateway.quality.canary_runner import CanaryAnswer, CanaryRunner
from gateway.stats import CanaryRecord

CASES = parse_canaries(
    [
        {"name": "ok", "prompt": "a", "model": "m1", "expect": {"exact": "A"}},
        {"name": "wrong", "prompt": "b", "model": "m1", "expect": {"exact": "B"}},
        {"name": "broken", "prompt": "c", "model": "m2", "expect": {"exact": "C"}},
        {"name": "chrf", "prompt": "d", "expect": {"reference": "Guten Morgen"}},
    ]
)


class ListSink:
    def __init__(self) -> None:
        self.records: list[CanaryRecord] = []

    def canary_finished(self, record: CanaryRecord) -> None:
        self.records.append(record)


async def send(case: Any) -> CanaryAnswer:
    if case.name == "broken":
        raise RuntimeError("503 circuit breaker open")
    answers = {"ok": "A", "wrong": "b?", "chrf": "Guten Morgen"}
    return CanaryAnswer(answers[case.name], case.model or "m3")


async def test_one_round_reports_pass_fail_error() -> None:
    sink = ListSink()
    times = iter([0.0, 0.25, 1.0, 1.5, 2.0, 2.1, 3.0, 3.5])
    runner = CanaryRunner(CASES, send, sink, interval_s=60, clock=lambda: next(times), wall=lambda: 1e9)
    records = await runner.run_once()
    assert records == sink.records
    assert [(r.case, r.model, r.result) for r in records] == [
        ("ok", "m1", "pass"),
        ("wrong", "m1", "fail"),
        ("broken", "m2", "error"),
        ("chrf", "m3", "pass"),
    ]
    assert [r.duration_s for r in records] == [0.25, 0.5, pytest.approx(0.1), 0.5]
    assert "503" in records[2].reason
    assert records[3].chrf == pytest.approx(100.0)
    assert all(r.finished_at == 1e9 for r in records)
    assert runner.last["wrong"].result == "fail"
    assert runner.status("m1") == ("fail", 0.5)
    assert runner.status("m2") == ("error", 0.0)
    assert runner.status("nobody") == (None, None)


async def test_a_slow_answer_is_an_error() -> None:
    async def slow(case: Any) -> CanaryAnswer:
        await asyncio.sleep(10)
        return CanaryAnswer("A", "m1")

    sink = ListSink()
    runner = CanaryRunner(CASES[:1], slow, sink, interval_s=60, timeout_s=0.05)
    (record,) = await runner.run_once()
    assert record.result == "error" and record.reason == "timed out"


async def test_runs_every_interval_until_stopped() -> None:
    sink = ListSink()
    slept: list[float] = []
    rounds = asyncio.Event()

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            rounds.set()
        await asyncio.sleep(0)

    runner = CanaryRunner(CASES[:1], send, sink, interval_s=30, sleep=sleep)
    task = runner.start()
    assert task is not None
    await asyncio.wait_for(rounds.wait(), 5)
    await runner.stop()
    assert task.cancelled()
    assert slept[:3] == [30, 30, 30]
    assert len(sink.records) >= 3 and all(r.result == "pass" for r in sink.records)


async def test_a_failing_sink_does_not_end_the_loop() -> None:
    calls = 0

    class Flaky(ListSink):
        def canary_finished(self, record: CanaryRecord) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("sink broke")
            super().canary_finished(record)

    sink = Flaky()
    done = asyncio.Event()

    async def sleep(seconds: float) -> None:
        if sink.records:
            done.set()
        await asyncio.sleep(0)

    runner = CanaryRunner(CASES[:1], send, sink, interval_s=1, sleep=sleep)
    runner.start()
    await asyncio.wait_for(done.wait(), 5)
    await runner.stop()
    assert sink.records[0].result == "pass"


async def test_interval_zero_is_off() -> None:
    runner = CanaryRunner(CASES, send, ListSink(), interval_s=0)
    assert not runner.enabled
    assert runner.start() is None
    await runner.run()  # returns at once
    assert not CanaryRunner([], send, ListSink(), interval_s=5).enabled
