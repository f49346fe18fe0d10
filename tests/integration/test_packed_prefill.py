"""Prompts of mixed lengths prefilled in one packed pass without padding (``packed_join.prefill``), on the real
demo model: every row's tokens and log-probabilities those of its prompt alone; checked once against the padded
prefill, and off for good when the packed one disagrees or fails; prompts of like lengths stay padded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gateway.demo import DEMO_CAUSAL_ID
from gateway.runners import packed_join, ragged
from gateway.runners.base import RunnerConfig
from gateway.runners.causal_batch import CausalBatch
from gateway.runners.sampler import Sampler
from gateway.runners.transformers_runner import TransformersRunner
from gateway.types import GenerationOutput, GenerationParams, SamplingParams
from tests.integration.test_packed_join import assert_alone, count_passes, rows_of

MIXED = [
    ("a", 9),
    ("a longer prompt " * 6, 7),
    ("mid " * 9, 12),
    ("x" * 150, 5),
    ("two words", 10),
    ("the longest prompt of them all " * 7, 8),
]


@pytest.fixture(scope="module")
def runner(demo_cache_dir: Path) -> TransformersRunner:
    return TransformersRunner(RunnerConfig(DEMO_CAUSAL_ID, path=str(demo_cache_dir / "tiny-causal-lm"), device="cpu"))


def new_batch(runner: TransformersRunner) -> CausalBatch:
    return CausalBatch(runner.model, runner.tracker, runner.pad_id, runner.device)


def run_out(batch: CausalBatch) -> None:
    while len(batch):
        batch.step()


def test_prompts_of_mixed_lengths_are_prefilled_packed_and_keep_their_own_tokens(
    runner: TransformersRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first such prefill checks the packed way against the padded one (on its longest and shortest rows),
    then prefills every row in one pass of only their tokens; the next group goes straight to one packed pass.
    Every greedy row gets the tokens of its prompt alone."""
    rows, sinks = rows_of(runner, [(p, GenerationParams(max_new_tokens=n)) for p, n in MIXED])
    later, later_sinks = rows_of(runner, [(p, GenerationParams(max_new_tokens=n)) for p, n in MIXED[2:]])
    passes = count_passes(runner.model, monkeypatch)
    with torch.inference_mode():
        batch = new_batch(runner)
        assert packed_join.prefill_pays(rows)
        batch.join(rows, Sampler(GenerationParams().sampling, runner.device))
        assert batch._packed_prefill is True
        assert len(passes) == 3  # the check's two (padded, packed) and the group's
        assert passes[-1]["input_ids"].shape == (1, sum(len(r.input_ids) for r in rows))
        assert [s[2] for s in passes[-1]["packed_rows"]] == [len(r.input_ids) for r in rows]
        run_out(batch)
        before = len(passes)
        batch.join(later, Sampler(GenerationParams().sampling, runner.device))
        assert len(passes) - before == 1 and "packed_rows" in passes[-1]
        run_out(batch)
    assert_alone(runner, rows, sinks)
    assert_alone(runner, later, later_sinks)


def test_a_sampled_group_samples_the_same_packed_as_padded(runner: TransformersRunner) -> None:
    """Rows of one submission share their sampler's generator: the same seed gives the same tokens and
    log-probabilities whether the group was prefilled packed or padded."""
    sampled = GenerationParams(max_new_tokens=8, sampling=SamplingParams(do_sample=True, seed=11))
    outcomes = []
    for packed in (True, False):
        rows, sinks = rows_of(runner, [(p, sampled) for p, _ in MIXED])
        with torch.inference_mode():
            batch = new_batch(runner)
            batch._packed_prefill = None if packed else False
            batch.join(rows, Sampler(sampled.sampling, runner.device))
            assert batch._packed_prefill is packed
            run_out(batch)
        outcomes.append([s.outcome for s in sinks])
    for a, b in zip(*outcomes, strict=True):
        assert isinstance(a, GenerationOutput) and isinstance(b, GenerationOutput)
        assert [t.id for t in a.tokens] == [t.id for t in b.tokens]
        assert [t.logprob for t in a.tokens] == pytest.approx([t.logprob for t in b.tokens], abs=1e-4)


def test_prompts_of_like_lengths_are_prefilled_padded(
    runner: TransformersRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few columns of padding cost less than an attention call per prompt: one padded pass."""
    rows, sinks = rows_of(runner, [(f"row number {i}", GenerationParams(max_new_tokens=6)) for i in range(8, 16)])
    assert not packed_join.prefill_pays(rows)
    passes = count_passes(runner.model, monkeypatch)
    with torch.inference_mode():
        batch = new_batch(runner)
        batch.join(rows, Sampler(GenerationParams().sampling, runner.device))
        assert batch._packed_prefill is None  # never needed, never checked
        assert len(passes) == 1 and "packed_rows" not in passes[0]
        assert passes[0]["input_ids"].shape == (len(rows), max(len(r.input_ids) for r in rows))
        run_out(batch)
    assert_alone(runner, rows, sinks)


@pytest.mark.parametrize("fault", ["disagrees", "fails"])
def test_packed_prefill_stays_off_when_the_check_does_not_hold(
    runner: TransformersRunner, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """A packed prefill whose logits differ from the padded one's (here made to), or that the model refuses,
    turns it off for good: every group is then prefilled padded, and the rows still get their own tokens."""
    real = ragged._packed

    def faulty(module: Any, query: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        segments = args[-1] if args else kwargs["segments"]
        if segments[0][1] == 0:  # no cache rows: a packed prefill (packed joins are left alone)
            if fault == "fails":
                raise RuntimeError("this model takes no packed prefill")
            output, _ = real(module, query, *args, **kwargs)
            return output + 0.5, None
        return real(module, query, *args, **kwargs)

    monkeypatch.setattr(ragged, "_packed", faulty)
    rows, sinks = rows_of(runner, [(p, GenerationParams(max_new_tokens=n)) for p, n in MIXED])
    again, again_sinks = rows_of(runner, [(p, GenerationParams(max_new_tokens=n)) for p, n in MIXED[1:]])
    passes = count_passes(runner.model, monkeypatch)
    with torch.inference_mode():
        batch = new_batch(runner)
        batch.join(rows, Sampler(GenerationParams().sampling, runner.device))
        assert batch._packed_prefill is False
        run_out(batch)
        before = len(passes)
        batch.join(again, Sampler(GenerationParams().sampling, runner.device))
        assert len(passes) - before == 1 and "packed_rows" not in passes[-1]
        run_out(batch)
    assert_alone(runner, rows, sinks)
    assert_alone(runner, again, again_sinks)
