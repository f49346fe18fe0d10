"""Rows that join within a decoding step's forward pass (``runners.packed_join``), on the real demo model: one
pass for the step and the prompts, every row's tokens and log-probabilities those of its prompt alone; packing
off for good when the packed pass disagrees; a packed pass that fails takes the running rows with it (they are
answered with the error) and the decode loop goes on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from gateway.demo import DEMO_CAUSAL_ID
from gateway.errors import GatewayError
from gateway.runners import packed_join, ragged
from gateway.runners.base import Row, RunnerConfig
from gateway.runners.causal_batch import BatchLost, CausalBatch
from gateway.runners.sampler import Sampler
from gateway.runners.transformers_runner import TransformersRunner
from gateway.types import GenerationOutput, GenerationParams, SamplingParams
from tests.integration.test_ragged import solo
from tests.serving_helpers import KeepOutcome


@pytest.fixture(scope="module")
def runner(demo_cache_dir: Path) -> TransformersRunner:
    return TransformersRunner(RunnerConfig(DEMO_CAUSAL_ID, path=str(demo_cache_dir / "tiny-causal-lm"), device="cpu"))


def rows_of(
    runner: TransformersRunner, specs: list[tuple[str, GenerationParams]]
) -> tuple[list[Row], list[KeepOutcome]]:
    sinks = [KeepOutcome() for _ in specs]
    rows = [
        Row(runner.encode(p), params, time.monotonic() + 60, s) for (p, params), s in zip(specs, sinks, strict=True)
    ]
    return rows, sinks


def count_passes(model: Any, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every forward pass of ``model`` from now on."""
    calls: list[dict[str, Any]] = []
    real = model.forward

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counted)
    return calls


def running_batch(runner: TransformersRunner, rows: list[Row]) -> CausalBatch:
    """A batch of ``rows`` (greedy) stepped until two have finished and ride along."""
    batch = CausalBatch(runner.model, runner.tracker, runner.pad_id, runner.device)
    batch.join(rows, Sampler(GenerationParams().sampling, runner.device))
    while sum(s.done for s in batch.states) < 2:
        batch.step()
    assert len(batch) == len(rows) and batch._ready_mask
    return batch


def assert_alone(runner: TransformersRunner, rows: list[Row], sinks: list[KeepOutcome]) -> None:
    for row, sink in zip(rows, sinks, strict=True):
        together, alone = sink.outcome, solo(runner, row)
        assert isinstance(together, GenerationOutput)
        assert [t.id for t in together.tokens] == [t.id for t in alone.tokens]
        assert [t.logprob for t in together.tokens] == pytest.approx([t.logprob for t in alone.tokens], abs=1e-4)


def test_rows_join_in_the_pass_of_a_decoding_step_and_keep_their_own_tokens(
    runner: TransformersRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first packed join (checked against two passes), a join is one forward pass that also gives every
    running row its next token; rows of one submission join together, a sampled row keeps its seed's tokens."""
    long = GenerationParams(max_new_tokens=40)
    specs = [(f"row {i}: " + "x" * (12 * i), long) for i in range(1, 21)]
    specs += [
        (w, GenerationParams(max_new_tokens=n)) for w, n in (("short", 2), ("a b c", 3), ("tiny", 4), ("mini", 5))
    ]
    joining = [
        ("first to join " * 3, GenerationParams(max_new_tokens=9)),
        ("q", GenerationParams(max_new_tokens=12)),
        ("two of", GenerationParams(max_new_tokens=6)),
        ("one submission", GenerationParams(max_new_tokens=7)),
        ("sampled " * 4, GenerationParams(max_new_tokens=8, sampling=SamplingParams(do_sample=True, seed=3))),
    ]
    rows, sinks = rows_of(runner, specs + joining)
    with torch.inference_mode():
        batch = running_batch(runner, rows[: len(specs)])
        batch.join([rows[len(specs)]], Sampler(rows[len(specs)].params.sampling, runner.device))
        assert batch._packing is True
        passes = count_passes(runner.model, monkeypatch)
        for group in ([rows[-4]], rows[-3:-1], [rows[-1]]):
            while sum(s.done for s in batch.states) < len(group):
                batch.step()
            running = [s for s in batch.states if not s.done]
            emitted = [len(s.tokens) for s in running]
            before = len(passes)
            batch.join(group, Sampler(group[0].params.sampling, runner.device))
            assert len(passes) - before == 1 and "packed_rows" in passes[-1]
            assert [len(s.tokens) for s in running] == [n + 1 for n in emitted]  # each running row stepped
        while len(batch):
            batch.step()
    assert_alone(runner, rows, sinks)


def test_packing_stays_off_when_the_packed_pass_disagrees(
    runner: TransformersRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A packed pass whose logits differ from two passes' (here made to) turns packing off for good; rows then
    join in a pass of their own and still get their own tokens."""
    real = ragged._packed

    def off(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        output, _ = real(*args, **kwargs)
        return output + 0.5, None

    monkeypatch.setattr(ragged, "_packed", off)
    specs = [(f"row {i}: " + "y" * (15 * i), GenerationParams(max_new_tokens=20)) for i in range(1, 12)]
    specs += [("s", GenerationParams(max_new_tokens=2)), ("t", GenerationParams(max_new_tokens=3))]
    joining = [("joins " * 5, GenerationParams(max_new_tokens=6)), ("late", GenerationParams(max_new_tokens=5))]
    rows, sinks = rows_of(runner, specs + joining)
    passes = count_passes(runner.model, monkeypatch)
    with torch.inference_mode():
        batch = running_batch(runner, rows[: len(specs)])
        batch.join([rows[-2]], Sampler(rows[-2].params.sampling, runner.device))
        assert batch._packing is False
        while not any(s.done for s in batch.states):
            batch.step()
        before = len(passes)
        batch.join([rows[-1]], Sampler(rows[-1].params.sampling, runner.device))
        assert len(passes) - before == 1 and "packed_rows" not in passes[-1]  # a prefill of its own
        while len(batch):
            batch.step()
    assert_alone(runner, rows, sinks)


def test_a_packed_pass_that_fails_clears_the_batch(runner: TransformersRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """The running rows' cache may be half written: the batch is emptied and ``BatchLost`` raised (its cause the
    model's error); the decode loop answers every running submission with that error."""
    specs = [(f"row {i}: " + "z" * (15 * i), GenerationParams(max_new_tokens=30)) for i in range(1, 12)]
    specs += [("s", GenerationParams(max_new_tokens=2)), ("t", GenerationParams(max_new_tokens=3))]
    rows, _ = rows_of(runner, [*specs, ("checked", GenerationParams(max_new_tokens=4)), ("fails", GenerationParams())])
    real = packed_join.forward

    def oom_after_the_check(model: Any, cache: Any, packed: Any, threads: Any) -> torch.Tensor:
        if batch._packing:
            raise torch.cuda.OutOfMemoryError("injected")
        return real(model, cache, packed, threads)

    monkeypatch.setattr(packed_join, "forward", oom_after_the_check)
    with torch.inference_mode():
        batch = running_batch(runner, rows[: len(specs)])
        batch.join([rows[-2]], Sampler(rows[-2].params.sampling, runner.device))
        assert batch._packing is True
        while sum(s.done for s in batch.states) < 2:
            batch.step()
        with pytest.raises(BatchLost) as lost:
            batch.join([rows[-1]], Sampler(rows[-1].params.sampling, runner.device))
    assert isinstance(lost.value.__cause__, torch.cuda.OutOfMemoryError)
    assert not len(batch) and batch.cache is None


def test_the_decode_loop_answers_every_row_when_a_packed_pass_fails(
    demo_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the decode loop: the submissions running and the one joining all fail with the model's error
    (nothing is left waiting), and the next submission is served."""
    runner = TransformersRunner(RunnerConfig(DEMO_CAUSAL_ID, path=str(demo_cache_dir / "tiny-causal-lm"), device="cpu"))
    real = packed_join.forward
    armed = {"fail": False}

    def failing(model: Any, cache: Any, packed: Any, threads: Any) -> torch.Tensor:
        if armed["fail"]:
            raise RuntimeError("injected")
        return real(model, cache, packed, threads)

    monkeypatch.setattr(packed_join, "forward", failing)
    runner.start()
    try:
        specs = [(f"long {i} " * (i + 1), GenerationParams(max_new_tokens=4000)) for i in range(10)]
        running = runner.submit(rows_of(runner, specs)[0])
        assert running.admitted.result(timeout=20)
        quick = [("q", GenerationParams(max_new_tokens=1)), ("r", GenerationParams(max_new_tokens=1))]
        assert runner.submit(rows_of(runner, quick)[0]).done.result(timeout=20) == 12  # they ride along
        checked = runner.submit(rows_of(runner, [("checked", GenerationParams(max_new_tokens=4000))])[0])
        assert checked.admitted.result(timeout=20)
        armed["fail"] = True
        joining = runner.submit(rows_of(runner, [("joins", GenerationParams(max_new_tokens=5))])[0])
        for submission in (running, checked, joining):
            with pytest.raises(GatewayError):
                submission.done.result(timeout=20)
        armed["fail"] = False
        after, sinks = rows_of(runner, [("after", GenerationParams(max_new_tokens=3))])
        assert runner.submit(after).done.result(timeout=20) == 1
        assert isinstance(sinks[0].outcome, GenerationOutput) and len(sinks[0].outcome.tokens) == 3
    finally:
        runner.close()
