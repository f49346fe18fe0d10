"""The batching loop with the real demo model: batch sizes under load, continuous batching, streamed rows.

Work items are the real ``WorkItem`` the service queues, time is a ``ManualClock`` wherever the load window
matters, and the runner is the real ``TransformersRunner`` on the demo causal model. Waits are bounded.
(The admission queue on its own is tested in ``tests/unit/test_scheduler_queue.py``.)
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from gateway.demo import DEMO_CAUSAL_ID
from gateway.errors import GatewayError, RequestCancelled
from gateway.runners.base import Row, RunnerConfig
from gateway.runners.causal_batch import CausalBatch
from gateway.runners.faults import FaultPlan
from gateway.runners.sampler import Sampler
from gateway.runners.threads import ThreadPolicy
from gateway.runners.transformers_runner import TransformersRunner
from gateway.scheduler import ModelScheduler, WorkItem
from gateway.stats import BatchRecord, NullSink
from gateway.types import GenerationOutput, GenerationParams, SamplingParams, Token
from tests.clock import ManualClock
from tests.serving_helpers import wait_until

GREEDY = GenerationParams(max_new_tokens=4)
LONG = GenerationParams(max_new_tokens=700)  # runs for about half a second on the demo model
SAMPLED = GenerationParams(max_new_tokens=4, sampling=SamplingParams(do_sample=True, temperature=0.7, seed=1))


# -- the batching loop with the real demo model --------------------------------------------------------------


class BatchLog(NullSink):
    """A stats sink that keeps the size of every batch run."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def batch_finished(self, record: BatchRecord) -> None:
        self.sizes.append(record.size)


@pytest.fixture(scope="module")
def runner(demo_cache_dir: Path) -> TransformersRunner:
    return TransformersRunner(RunnerConfig(DEMO_CAUSAL_ID, path=str(demo_cache_dir / "tiny-causal-lm"), device="cpu"))


async def test_batches_are_sized_for_the_recent_load(runner: TransformersRunner) -> None:
    clock = ManualClock()
    log = BatchLog()
    scheduler = ModelScheduler(
        "demo", runner, max_queue=16, max_batch_size=8, max_batch_wait_s=30.0, sink=log, clock=clock
    )
    scheduler.start()
    loop = asyncio.get_running_loop()

    def submit(n: int, params: GenerationParams = GREEDY) -> list[WorkItem]:
        items = [WorkItem(loop, runner.encode(f"row {i}"), params, clock() + 60, clock=clock) for i in range(n)]
        scheduler.queue.reserve(n)
        scheduler.queue.put(items)
        return items

    async def answered(items: list[WorkItem]) -> None:
        await asyncio.wait_for(asyncio.gather(*(i.future for i in items)), timeout=20)

    try:
        # The decode loop is held admitting a one-row group while five more rows queue up: six rows in the system.
        runner.faults.set(FaultPlan(kind="stall", count=1, seconds=60))
        first = submit(1)
        await wait_until(lambda: runner.faults.injected == 1, what="the stall")
        second = submit(5)
        runner.faults.clear()
        # One row is generating, so five are expected: they join at once as one group (no 30 s wait).
        await answered(first + second)
        await wait_until(lambda: len(log.sizes) == 2, what="two groups")  # recorded just after their rows
        assert sorted(log.sizes) == [1, 5]
        # Six rows were in the system a moment ago, but nothing runs now: the model is idle, a row starts at once.
        long = submit(1, LONG)
        await wait_until(lambda: scheduler.queue.depth == 0, what="the long row to start")
        # While it runs, five rows are expected back: the next group waits (within its 30 s window) for half ...
        lone = submit(1)
        await asyncio.sleep(0.05)
        assert not any(i.future.done() for i in lone) and scheduler.queue.depth == 1
        assert not long[0].future.done()
        # ... and starts once two are there, without waiting out the window for the rest.
        await answered(lone + submit(1))
        await answered(long)
        await wait_until(lambda: len(log.sizes) == 4, what="two more groups")
        assert log.sizes[-2:] == [2, 1]
        # Once the load has been light for a while, a lone row starts at once even beside a running one.
        long = submit(1, LONG)
        await wait_until(lambda: scheduler.queue.depth == 0, what="the long row to start")
        clock.advance(5.0)
        await answered(submit(1))
        assert not long[0].future.done()
        await answered(long)
    finally:
        runner.faults.clear()
        await scheduler.close(RequestCancelled())


async def test_queued_rows_start_before_the_finished_rows_are_all_answered(runner: TransformersRunner) -> None:
    # Two rows fill the batch and finish on the same step; a third waits in the queue. It must be handed to the
    # model as soon as the first of the two is answered, not once the event loop has answered both and the
    # submission's watcher has run (the model would idle meanwhile: about 20 ms a batch at concurrency 64).
    scheduler = ModelScheduler("demo", runner, max_queue=8, max_batch_size=2, max_batch_wait_s=0.0)
    scheduler.start()
    loop = asyncio.get_running_loop()
    items = [WorkItem(loop, runner.encode("the same prompt"), GREEDY, time.monotonic() + 60) for _ in range(3)]
    first, second, queued = items
    seen_at_answer: list[bool] = []
    for done in (first, second):
        done.future.add_done_callback(lambda _f: seen_at_answer.append(queued.started_at is not None))
    try:
        scheduler.queue.reserve(3)
        scheduler.queue.put(items)  # the batch holds two: the third waits for room
        await asyncio.wait_for(asyncio.gather(*(i.future for i in items)), timeout=20)
        assert first.started_at == second.started_at  # one group
        # Answered one after the other, the second answer's callbacks already see the third row started.
        assert seen_at_answer[-1] is True, seen_at_answer
    finally:
        await scheduler.close(RequestCancelled())


class TokenLog:
    """A ``RowSink`` that keeps what the runner reports."""

    def __init__(self) -> None:
        self.tokens: list[Token] = []
        self.outcome: GenerationOutput | GatewayError | None = None
        self.finished = threading.Event()

    def cancelled(self) -> bool:
        return False

    def on_token(self, token: Token) -> None:
        self.tokens.append(token)

    def on_done(self, outcome: GenerationOutput | GatewayError) -> None:
        self.outcome = outcome
        self.finished.set()


def test_only_streamed_rows_report_tokens_as_they_come(runner: TransformersRunner) -> None:
    ids = runner.encode("the same prompt")
    sinks = [TokenLog(), TokenLog()]
    rows = [
        Row(input_ids=ids, params=GREEDY, deadline=time.monotonic() + 60, sink=sink, stream=stream)
        for sink, stream in zip(sinks, (True, False), strict=True)
    ]
    runner.submit(rows).done.result(timeout=20)
    assert all(s.finished.wait(5) for s in sinks)
    streamed, plain = (s.outcome for s in sinks)
    assert isinstance(streamed, GenerationOutput) and isinstance(plain, GenerationOutput)
    assert streamed.text == plain.text and len(plain.tokens) == GREEDY.max_new_tokens
    assert sinks[0].tokens == streamed.tokens  # token by token, as chosen
    assert sinks[1].tokens == []  # only the answer
    assert [r.emitted_tokens for r in rows] == [GREEDY.max_new_tokens] * 2


def test_greedy_submissions_share_one_choice_per_step(runner: TransformersRunner) -> None:
    """Rows of separate greedy submissions are chosen for together; a seeded sampler keeps its own RNG."""
    batch = CausalBatch(runner.model, runner.tracker, runner.pad_id, runner.device)

    def rows(n: int, params: GenerationParams) -> list[Row]:
        ids = runner.encode("Request 0: write a short story about the sea.")  # no EOS in its first 50 tokens
        long = GenerationParams(max_new_tokens=50, sampling=params.sampling)
        return [Row(input_ids=ids, params=long, deadline=time.monotonic() + 60, sink=TokenLog()) for _ in range(n)]

    with torch.inference_mode():
        batch.join(rows(2, GREEDY), Sampler(GREEDY.sampling, runner.device))
        batch.join(rows(3, GREEDY), Sampler(GREEDY.sampling, runner.device))
        batch.join(rows(1, SAMPLED), Sampler(SAMPLED.sampling, runner.device))
        assert len(batch) == 6
        assert len({id(s) for s in batch.samplers[:5]}) == 1
        assert batch.samplers[5] is not batch.samplers[0] and batch.samplers[5].generator is not None
        batch.step()
    assert len(batch) == 6 and all(len(state.ids) == 2 for state in batch.states)


@pytest.mark.parametrize(("attention", "takes_ready_mask"), [("sdpa", True), ("eager", False)])
def test_decoding_steps_take_the_ready_mask_once_it_proves_equal_on_a_padded_step(
    runner: TransformersRunner,
    demo_cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
    attention: str,
    takes_ready_mask: bool,
) -> None:
    """Without padding both masks are all true and prove nothing, so steps keep the 2D mask. The first step with
    a padded row checks the ready mask against it: SDPA takes it from then on. Eager attention would add it to
    its scores (padding not masked out), so it keeps the 2D mask. Either way each row's tokens are its own."""
    model = AutoModelForCausalLM.from_pretrained(
        demo_cache_dir / "tiny-causal-lm", attn_implementation=attention
    ).eval()
    batch = CausalBatch(model, runner.tracker, runner.pad_id, runner.device)
    batch._ready_mask = None  # eager is not tried unchecked: check it anyway
    steps: list[int] = []  # the attention mask's dimensions, per decoding forward pass
    real_forward = model.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if kwargs["input_ids"].shape[1] == 1:
            steps.append(kwargs["attention_mask"].dim())
        return real_forward(*args, **kwargs)

    model.forward = forward
    params = GenerationParams(max_new_tokens=24)
    prompts = ["Request 3: write a short story about a letter.", "ab"]  # the second joins later, padded
    sinks = [TokenLog() for _ in prompts]
    rows = [
        Row(input_ids=runner.encode(p), params=params, deadline=time.monotonic() + 60, sink=sink)
        for p, sink in zip(prompts, sinks, strict=True)
    ]
    with caplog.at_level("INFO", logger="gateway.runner"), torch.inference_mode():
        batch.join(rows[:1], Sampler(params.sampling, runner.device))
        for _ in range(3):
            batch.step()
        batch.join(rows[1:], Sampler(params.sampling, runner.device))
        while len(batch):
            batch.step()
        model.forward = real_forward
        alone = [
            model.generate(torch.tensor([row.input_ids]), max_new_tokens=24, do_sample=False)[0].tolist()
            for row in rows
        ]
    checks = [r for r in caplog.records if r.getMessage() == "decoding-step attention mask checked"]
    assert [getattr(r, "ready_mask", None) for r in checks] == [takes_ready_mask]
    assert steps[:5] == [2, 2, 2, 2, 4]  # three unpadded steps, then the padded one and its check
    assert set(steps[5:]) == {4 if takes_ready_mask else 2} and len(steps) > 8
    for row, sink, expected in zip(rows, sinks, alone, strict=True):
        assert isinstance(sink.outcome, GenerationOutput)
        ids = [t.id for t in sink.outcome.tokens]
        assert len(ids) > 2 and ids == expected[len(row.input_ids) :][: len(ids)]


def test_rows_of_many_lengths_joining_and_leaving_keep_their_own_tokens_with_steps_writing_in_place(
    runner: TransformersRunner,
) -> None:
    """Rows with prompts of very different lengths join a running batch at different steps and leave it at
    different steps (each its own ``max_new_tokens``): every row's tokens are those of its prompt generated alone,
    and between those reshapes a decoding step writes its column into the cache's spare room (the keys stay a
    view of the same buffer) instead of copying the cache."""
    model = runner.model
    batch = CausalBatch(model, runner.tracker, runner.pad_id, runner.device)
    prompts = ["a" * 3, "Request 7: " + "letters and words " * 12, "ab cd", "x" * 40]
    lengths = [9, 20, 5, 14]
    sinks = [TokenLog() for _ in prompts]
    rows = [
        Row(
            input_ids=runner.encode(p),
            params=GenerationParams(max_new_tokens=n),
            deadline=time.monotonic() + 60,
            sink=sink,
        )
        for p, n, sink in zip(prompts, lengths, sinks, strict=True)
    ]
    in_place = reshaped = 0
    with torch.inference_mode():
        batch.join(rows[:2], Sampler(GREEDY.sampling, runner.device))
        joins = {3: rows[2:3], 6: rows[3:]}
        for step in range(40):
            if step in joins:
                batch.join(joins[step], Sampler(GREEDY.sampling, runner.device))
            if not len(batch):
                break
            assert batch.cache is not None
            before = (len(batch), batch.cache.layers[0].keys.data_ptr())
            batch.step()
            if batch.cache is not None and before == (len(batch), batch.cache.layers[0].keys.data_ptr()):
                in_place += 1
            else:
                reshaped += 1
        alone = [
            model.generate(torch.tensor([row.input_ids]), max_new_tokens=n, do_sample=False)[0].tolist()
            for row, n in zip(rows, lengths, strict=True)
        ]
    assert not len(batch) and reshaped >= 3 and in_place > reshaped
    for row, sink, expected in zip(rows, sinks, alone, strict=True):
        assert isinstance(sink.outcome, GenerationOutput)
        assert [t.id for t in sink.outcome.tokens] == expected[len(row.input_ids) :]


def test_a_big_pass_gets_every_core_and_a_small_one_leaves_a_core_to_the_event_loop(
    runner: TransformersRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On two cores: the prefill of long prompts (much work) runs on both, the decoding steps of a few short rows
    of the demo model on one; with ``OMP_NUM_THREADS`` the pool is the operator's for every pass."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    model = runner.model
    policy = ThreadPolicy(model, cores=2)
    assert policy.threads_for(rows=2, queries=1, keys=40) == 1
    assert policy.threads_for(rows=16, queries=512, keys=512) == 2
    seen: list[tuple[int, int]] = []  # (tokens per row in the pass, torch threads) of each forward pass
    real_forward = model.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        seen.append((kwargs["input_ids"].shape[1], torch.get_num_threads()))
        return real_forward(*args, **kwargs)

    before = torch.get_num_threads()
    monkeypatch.setattr(model, "forward", forward)
    batch = CausalBatch(model, runner.tracker, runner.pad_id, runner.device, policy)
    params = GenerationParams(max_new_tokens=3)
    rows = [
        Row(input_ids=runner.encode("w" * 400), params=params, deadline=time.monotonic() + 60, sink=TokenLog())
        for _ in range(8)
    ]
    try:
        with torch.inference_mode():
            batch.join(rows, Sampler(params.sampling, runner.device))
            while len(batch):
                batch.step()
    finally:
        torch.set_num_threads(before)
    assert seen[0][0] >= 400 and seen[0][1] == 2  # the prefill
    assert [threads for tokens, threads in seen[1:]] == [1, 1] and all(tokens == 1 for tokens, _ in seen[1:])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert ThreadPolicy(model, cores=2).fixed


def test_a_finished_row_rides_along_until_it_would_pass_every_running_row(runner: TransformersRunner) -> None:
    """Seven rows: one of a long prompt finishes after two tokens while six short ones run on. One finished row
    of seven is under a quarter, but its position is past every running row's (riding on could take it past the
    model's last position), so it leaves at once; a short row that finishes early (one of six) rides along."""
    model = runner.model
    batch = CausalBatch(model, runner.tracker, runner.pad_id, runner.device)
    prompts = ["Request 9: " + "a long prompt of many words " * 4, "ab", "cd", "ef", "gh", "ij", "kl"]
    budgets = [2, 3, 12, 12, 12, 12, 12]
    rows = [
        Row(
            input_ids=runner.encode(p),
            params=GenerationParams(max_new_tokens=n),
            deadline=time.monotonic() + 60,
            sink=TokenLog(),
        )
        for p, n in zip(prompts, budgets, strict=True)
    ]
    sizes = []
    with torch.inference_mode():
        batch.join(rows, Sampler(GREEDY.sampling, runner.device))
        while len(batch):
            batch.step()
            sizes.append((len(batch), sum(not s.done for s in batch.states)))
    # After the second token the long row has left (6 rows); after the third the short one rides along (6, 5 running).
    assert sizes[0] == (6, 6) and sizes[1] == (6, 5)
