"""Attention in groups of rows (``runners.ragged``) with the real demo model: the same attention as over the whole
padded width, a plan that splits only where it pays, and a running batch of mixed lengths that attends in groups
while every row keeps the tokens of its prompt generated alone."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers.integrations.sdpa_attention as sdpa_module

from gateway.demo import DEMO_CAUSAL_ID
from gateway.runners import ragged
from gateway.runners.base import Row, RunnerConfig
from gateway.runners.causal_batch import CausalBatch
from gateway.runners.sampler import Sampler
from gateway.runners.transformers_runner import TransformersRunner
from gateway.types import GenerationOutput, GenerationParams, SamplingParams
from tests.serving_helpers import KeepOutcome


@pytest.fixture(scope="module")
def runner(demo_cache_dir: Path) -> TransformersRunner:
    return TransformersRunner(RunnerConfig(DEMO_CAUSAL_ID, path=str(demo_cache_dir / "tiny-causal-lm"), device="cpu"))


def test_grouped_attention_is_the_attention_over_the_whole_width(runner: TransformersRunner) -> None:
    """One query per row over a left-padded cache: per group of rows, over its own columns, the output is SDPA's
    over every column with the padding masked (the model's own attention module, with grouped-query heads)."""
    module = runner.model.model.layers[0].self_attn
    config = runner.model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = config.hidden_size // heads
    generator = torch.Generator().manual_seed(3)
    firsts = [0, 0, 5, 17, 17, 30, 44, 45]  # ascending: the longest rows first
    rows, width = len(firsts), 50
    query = torch.randn(rows, heads, 1, head_dim, generator=generator)
    key = torch.randn(rows, kv_heads, width, head_dim, generator=generator)
    value = torch.randn(rows, kv_heads, width, head_dim, generator=generator)
    mask = torch.ones(rows, 1, 1, width, dtype=torch.bool)
    for row, first in enumerate(firsts):
        mask[row, ..., :first] = False
        key[row, :, :first] = 0.0  # padding is zero in the running batch's cache
        value[row, :, :first] = 0.0
    whole, _ = ragged.ragged_sdpa(module, query, key, value, mask, scaling=module.scaling, dropout=0.0)
    groups = [(0, 2, 0), (2, 5, 5), (5, 8, 30)]
    grouped, _ = ragged.ragged_sdpa(
        module, query, key, value, mask, ragged_rows=groups, scaling=module.scaling, dropout=0.0
    )
    assert grouped.shape == whole.shape == (rows, 1, heads, head_dim)
    torch.testing.assert_close(grouped, whole, rtol=1e-5, atol=1e-6)
    with pytest.raises(AssertionError):  # a group that starts past a row's first column changes that row
        wrong, _ = ragged.ragged_sdpa(
            module, query, key, value, mask, ragged_rows=[(0, 3, 0), (3, 8, 40)], scaling=module.scaling
        )
        torch.testing.assert_close(wrong, whole, rtol=1e-5, atol=1e-6)


def test_the_plan_splits_where_it_drops_many_columns_and_not_for_a_few() -> None:
    # 32 rows, the first 8 hundreds of columns longer than the rest: one split at row 8 drops 24 x ~400 columns.
    firsts = [0] * 4 + [10] * 4 + [400 + i for i in range(24)]
    assert ragged.plan(firsts, attention_width=64) == [(0, 8, 0), (8, 32, 400)]
    # Rows spread evenly over 640 columns: groups of consecutive rows, each from its own first row's column.
    spread = [20 * i for i in range(32)]
    assert ragged.plan(spread, attention_width=64) == [(0, 16, 0), (16, 32, 320)]
    groups = ragged.plan(spread, attention_width=384)  # the bench Llama's 6 heads of 64: smaller splits pay
    assert len(groups) == 4 and groups[0][0] == 0 and groups[-1][1] == 32
    assert all(stop == start for (_, stop, _), (start, _, _) in itertools.pairwise(groups))
    assert all(first == spread[start] for start, _, first in groups)  # no row loses a column it uses
    # A few columns for a few rows do not pay for another attention call.
    assert ragged.plan([0, 0, 3, 5], attention_width=64) == [(0, 4, 0)]
    assert ragged.plan([], attention_width=64) == []
    # The wider the attention, the sooner a split pays (the bench Llama's 6 x 64 against the demo's 4 x 16).
    close = [0] * 16 + [40] * 16
    assert len(ragged.plan(close, attention_width=384)) == 2 and len(ragged.plan(close, attention_width=64)) == 1
    assert ragged.halves([9, 0, 4, 7]) == [(0, 2, 0), (2, 4, 4)]


def test_a_mixed_batch_attends_in_groups_and_every_row_keeps_its_own_tokens(
    runner: TransformersRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of very different prompt lengths join at different steps: the batch keeps them longest first, its
    decoding steps call SDPA per group over fewer columns than the batch is wide, and each row's tokens (greedy,
    and sampled with its seed) are those it gets alone."""
    monkeypatch.setattr(ragged, "_SPLIT_COST", 2_000)  # the demo model is narrow: let a few rows pay for a split
    model = runner.model
    batch = CausalBatch(model, runner.tracker, runner.pad_id, runner.device)
    calls: list[tuple[int, int]] = []  # (rows, columns) of each decoding-step SDPA call
    real = sdpa_module.sdpa_attention_forward

    def spy(module: Any, query: torch.Tensor, key: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if query.shape[2] == 1:
            calls.append((key.shape[0], key.shape[2]))
        return real(module, query, key, *args, **kwargs)

    monkeypatch.setattr(sdpa_module, "sdpa_attention_forward", spy)
    greedy = GenerationParams(max_new_tokens=12)
    sampled = GenerationParams(max_new_tokens=10, sampling=SamplingParams(do_sample=True, temperature=0.8, seed=5))
    prompts = ["x" * 300, "ab", "words " * 30, "q", "Request 9: " + "a letter " * 25, "hello there", "z" * 60]
    params = [greedy, greedy, sampled, greedy, greedy, sampled, greedy]
    sinks = [KeepOutcome() for _ in prompts]
    rows = [
        Row(input_ids=runner.encode(p), params=q, deadline=time.monotonic() + 60, sink=s)
        for p, q, s in zip(prompts, params, sinks, strict=True)
    ]
    widths: list[int] = []
    grouped_steps = 0
    with torch.inference_mode():
        joins = {0: [0, 1], 2: [2], 3: [3, 4], 5: [5, 6]}
        for step in range(40):
            for i in joins.get(step, []):
                batch.join([rows[i]], Sampler(rows[i].params.sampling, runner.device))
            if not len(batch):
                break
            assert batch.mask is not None
            firsts = batch.mask.argmax(dim=1).tolist()
            assert firsts == sorted(firsts)  # longest first
            widths.append(batch.mask.shape[1] + 1)
            before = len(calls)
            batch.step()
            if len(calls) - before > model.config.num_hidden_layers:
                grouped_steps += 1
                assert all(columns <= widths[-1] for _, columns in calls[before:])
                assert any(columns < widths[-1] for _, columns in calls[before:])
    assert not len(batch) and grouped_steps >= 5
    for row, sink in zip(rows, sinks, strict=True):
        together, alone = sink.outcome, solo(runner, row)
        assert isinstance(together, GenerationOutput)
        assert [t.id for t in together.tokens] == [t.id for t in alone.tokens]
        assert [t.logprob for t in together.tokens] == pytest.approx([t.logprob for t in alone.tokens], abs=1e-4)


def test_rows_join_in_place_of_finished_ones_and_keep_their_own_tokens(runner: TransformersRunner) -> None:
    """A row that joins while finished rows ride along takes one's place in the cache (no copy: the keys stay a
    view of the same buffer); one wider than the cache makes the batch rebuild. Every row's tokens are those of
    its prompt generated alone."""
    model = runner.model
    batch = CausalBatch(model, runner.tracker, runner.pad_id, runner.device)
    running = [(f"row {i}: " + "x" * (20 * i), 30) for i in range(1, 8)]
    specs = [*running, ("short", 2), ("a b c", 3), ("mid " * 10, 6), ("q", 12), ("y" * 300, 5)]
    sinks = [KeepOutcome() for _ in specs]
    rows = [
        Row(runner.encode(p), GenerationParams(max_new_tokens=n), time.monotonic() + 60, s)
        for (p, n), s in zip(specs, sinks, strict=True)
    ]
    greedy = Sampler(GenerationParams().sampling, runner.device)
    in_place: list[bool] = []
    with torch.inference_mode():
        batch.join(rows[:9], greedy)
        for _ in range(4):  # two rows finish and ride along (under a quarter of the batch)
            batch.step()
        assert batch.cache is not None and len(batch) == 9 and sum(s.done for s in batch.states) == 2
        for row in rows[9:]:  # two fit in place of the finished rows; the last is wider than the cache
            buffer = batch.cache.layers[0].keys.data_ptr()
            batch.join([row], Sampler(row.params.sampling, runner.device))
            in_place.append(batch.cache.layers[0].keys.data_ptr() == buffer)
            batch.step()
        while len(batch):
            batch.step()
    assert in_place == [True, True, False]
    for row, sink in zip(rows, sinks, strict=True):
        together, alone = sink.outcome, solo(runner, row)
        assert isinstance(together, GenerationOutput)
        assert [t.id for t in together.tokens] == [t.id for t in alone.tokens]
        # The log-probabilities too: a random model's greedy ids hardly depend on positions, these do.
        assert [t.logprob for t in together.tokens] == pytest.approx([t.logprob for t in alone.tokens], abs=1e-4)


def solo(runner: TransformersRunner, row: Row) -> GenerationOutput:
    """``row``'s prompt and settings run in a batch of its own."""
    alone = KeepOutcome()
    batch = CausalBatch(runner.model, runner.tracker, runner.pad_id, runner.device)
    with torch.inference_mode():
        batch.join(
            [Row(row.input_ids, row.params, time.monotonic() + 60, alone)], Sampler(row.params.sampling, runner.device)
        )
        while len(batch):
            batch.step()
    assert isinstance(alone.outcome, GenerationOutput)
    return alone.outcome
