"""The model process (``GATEWAY_MODEL_PROCESS=true``, the default of ``gateway serve``).

The real app, its demo models loaded by real child processes (``python -m gateway.runners.model_process``) that
talk to it over the JSON channel. Faults are caused for real: the process is killed with SIGKILL, or stalled by
the contract's stall fault until the watchdog kills it. Most other tests run the same decode loop in-process
(seconds less per app); the tests that start ``gateway serve`` (TGI clients, drain, deploy) use this mode too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID
from gateway.errors import RequestCancelled
from gateway.runners.base import Row, RunnerConfig
from gateway.runners.process_runner import ProcessRunner
from gateway.types import GenerationOutput, GenerationParams
from tests.serving_helpers import KeepOutcome, hold_worker, metrics, sample, sse_events, wait_until

GEN = DEMO_CAUSAL_ID
PROMPTS = [f"process prompt {i}" for i in range(6)]


def runner_of(app: Any) -> ProcessRunner:
    runner = app.gateway.engine.generation.runner
    assert isinstance(runner, ProcessRunner)
    return runner


async def answers(client: httpx.AsyncClient) -> dict[str, Any]:
    async def one(prompt: str) -> Any:
        r = await client.post(
            "/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": 12, "details": True}}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        return body["generated_text"], [t["id"] for t in body["details"]["tokens"]]

    generated = await asyncio.gather(*(one(p) for p in PROMPTS))
    sampled = await client.post(
        "/generate", json={"inputs": "seeded", "parameters": {"max_new_tokens": 8, "do_sample": True, "seed": 5}}
    )
    streamed = await client.post("/generate_stream", json={"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 12}})
    translated = await client.post("/translate", json={"text": "hello", "source_lang": "en", "target_lang": "fr"})
    assert sampled.status_code == streamed.status_code == translated.status_code == 200
    return {
        "generated": generated,
        "sampled": sampled.json()["generated_text"],
        "streamed": "".join(e["token"]["text"] for e in sse_events(streamed.text) if e.get("token")),
        "translated": translated.json()["translation"],
    }


async def test_the_model_process_answers_like_the_in_process_loop(app_client: Any) -> None:
    async with app_client(model_process=True) as (client, app):
        runner = runner_of(app)
        assert runner.pid != os.getpid() and runner.alive
        batching = {m["model_id"]: m["continuous_batching"] for m in (await client.get("/info")).json()["models"]}
        assert batching == {GEN: True, DEMO_SEQ2SEQ_ID: False}  # as the model processes reported
        through_process = await answers(client)
    assert runner._child.proc.returncode == 0  # stopped cleanly at shutdown
    async with app_client() as (client, _):
        in_process = await answers(client)
    assert through_process == in_process
    assert through_process["streamed"] == through_process["generated"][0][0]


async def test_a_killed_model_process_fails_its_rows_and_is_replaced(app_client: Any) -> None:
    async with app_client(model_process=True, enable_faults=True) as (client, app):
        runner = runner_of(app)
        old = runner.pid
        blocker = await hold_worker(client, app)  # a row inside the model process, stalled
        os.kill(old, signal.SIGKILL)
        r = await blocker
        assert r.status_code == 500 and r.json()["error_type"] == "model_error", r.text
        await wait_until(lambda: runner.alive and runner.pid != old, timeout_s=60, what="a new model process")
        assert runner.restarts == 1
        r = await client.post("/generate", json={"inputs": "after", "parameters": {"max_new_tokens": 4}})
        assert r.status_code == 200, r.text
        assert (await client.get("/ready")).status_code == 200
        assert sample(await metrics(client), "gateway_worker_restarts_total", model=GEN) == 1


async def test_a_stalled_model_process_is_killed_by_the_watchdog_and_replaced(app_client: Any) -> None:
    async with app_client(model_process=True, enable_faults=True, watchdog_s=2.0) as (client, app):
        runner = runner_of(app)
        old = runner.pid
        r = await (await hold_worker(client, app))  # a 60 s stall, far past the watchdog
        assert r.status_code == 500 and r.json()["error_type"] == "worker_stalled", r.text
        await wait_until(lambda: runner.alive and runner.pid != old, timeout_s=60, what="a new model process")
        with pytest.raises(ProcessLookupError):
            os.kill(old, 0)  # the stuck process is gone, not left running
        r = await client.post("/generate", json={"inputs": "after", "parameters": {"max_new_tokens": 4}})
        assert r.status_code == 200, r.text
        assert sample(await metrics(client), "gateway_worker_restarts_total", model=GEN) == 1


class _CancelOnFirstToken(KeepOutcome):
    """A streamed row's sink that asks to stop as soon as its first token reaches the gateway."""

    def cancelled(self) -> bool:
        return self.tokens > 0


@pytest.mark.parametrize("model", ["tiny-causal-lm", "tiny-seq2seq"])
def test_streamed_tokens_cross_the_channel_while_the_row_is_generating(demo_cache_dir: Path, model: str) -> None:
    """The model process sends each forward pass's tokens when the pass ends (the running batch of the causal
    model, one ``generate``'s steps on the seq2seq model): a client that leaves at its first token stops a row
    that would otherwise run 900 tokens."""
    model_id = DEMO_CAUSAL_ID if model == "tiny-causal-lm" else DEMO_SEQ2SEQ_ID
    runner = ProcessRunner(RunnerConfig(model_id, path=str(demo_cache_dir / model), device="cpu"))
    try:
        first = _CancelOnFirstToken()  # a first row: the loop's own events wait for its passes from then on
        runner.submit([Row(runner.encode("warm"), GenerationParams(max_new_tokens=2), time.monotonic() + 60, first)])
        assert first.done.wait(60)
        sink = _CancelOnFirstToken()
        row = Row(runner.encode("stream me"), GenerationParams(max_new_tokens=900), time.monotonic() + 60, sink, True)
        runner.submit([row])
        assert sink.done.wait(60)
        assert isinstance(sink.outcome, RequestCancelled), sink.outcome
        assert 1 <= sink.tokens < 900
    finally:
        runner.close()


def test_a_model_process_that_stops_reading_never_holds_the_submitter(demo_cache_dir: Path) -> None:
    """The model process stopped (SIGSTOP) while a megabyte of submissions is handed over: far more than the
    socket holds, yet every ``submit`` returns (the event loop calls it; a thread of the runner does the
    sending). Once the process runs again, every row is answered."""
    runner = ProcessRunner(RunnerConfig(DEMO_CAUSAL_ID, path=str(demo_cache_dir / "tiny-causal-lm"), device="cpu"))
    sinks: list[KeepOutcome] = []
    try:
        warm = KeepOutcome()
        runner.submit([Row(runner.encode("warm"), GenerationParams(max_new_tokens=1), time.monotonic() + 60, warm)])
        assert warm.done.wait(60)
        ids = runner.encode("a long prompt, " * 20)
        os.kill(runner.pid, signal.SIGSTOP)
        submitted = threading.Event()

        def submit_all() -> None:
            for _ in range(100):  # 800 rows of ~300 ids: about a megabyte of JSON
                group = [KeepOutcome() for _ in range(8)]
                sinks.extend(group)
                runner.submit([Row(ids, GenerationParams(max_new_tokens=1), time.monotonic() + 120, s) for s in group])
            submitted.set()

        threading.Thread(target=submit_all, daemon=True).start()
        returned = submitted.wait(20)
        os.kill(runner.pid, signal.SIGCONT)
        assert returned, "submit waited on a model process that does not read"
        for sink in sinks:
            assert sink.done.wait(120)
        assert all(isinstance(s.outcome, GenerationOutput) for s in sinks)
    finally:
        os.kill(runner.pid, signal.SIGCONT)
        runner.close()
