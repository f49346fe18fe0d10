"""The sampling extras' helpers (``runners.logits``) on small tensors, and the continuous batch choosing with them
for rows of different settings at once (the real demo causal model)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from gateway.demo import DEMO_CAUSAL_ID
from gateway.runners.base import Row, RunnerConfig
from gateway.runners.causal_batch import CausalBatch
from gateway.runners.logits import (
    LOGPROB_FLOOR,
    SAFE_LIMIT,
    LogitBias,
    Penalties,
    RunningCounts,
    bias_vector,
    guard_distribution,
    safe_value,
    top_alternatives,
)
from gateway.runners.sampler import Sampler
from gateway.runners.transformers_runner import TransformersRunner
from gateway.runners.wire import token_from_json, token_to_json
from gateway.types import GenerationOutput, GenerationParams, SamplingParams, Token, TopToken
from tests.serving_helpers import KeepOutcome

CPU = torch.device("cpu")


def test_safe_value_clamps_and_drops_nan() -> None:
    assert safe_value(1.5) == 1.5 and safe_value(-2.0) == -2.0
    assert safe_value(math.inf) == SAFE_LIMIT and safe_value(-1e30) == -SAFE_LIMIT
    assert safe_value(math.nan) == 0.0


def test_bias_vector_ignores_ids_outside_the_vocabulary() -> None:
    vector = bias_vector([(0, 1.0), (3, -2.0), (3, -1.0), (-1, 5.0), (4, 5.0), (10**30, 5.0), (2, math.nan)], 4, CPU)
    assert vector.tolist() == [1.0, 0.0, 0.0, -3.0]


def test_logit_bias_adds_to_every_row_and_follows_the_width() -> None:
    bias = LogitBias([(1, 10.0)])
    scores = torch.zeros((2, 3))
    assert bias(None, scores).tolist() == [[0.0, 10.0, 0.0]] * 2
    assert scores.tolist() == [[0.0] * 3] * 2  # not changed in place
    assert bias(None, torch.zeros((1, 2))).tolist() == [[0.0, 10.0]]  # rebuilt for another vocabulary size
    assert LogitBias([(5, 10.0)])(None, torch.ones((1, 3))).tolist() == [[1.0, 1.0, 1.0]]


def test_running_counts_add_only_new_tokens_and_follow_rows_that_come_and_go() -> None:
    a, b, c = object(), object(), object()
    counts = RunningCounts()
    ha, hb = [1, 1, 2], []
    assert counts.update([a, b], [ha, hb], 3, CPU).tolist() == [[0.0, 2.0, 1.0], [0.0, 0.0, 0.0]]
    ha.append(0)
    hb.extend([2, 9])  # an id outside the vocabulary is skipped
    assert counts.update([a, b], [ha, hb], 3, CPU).tolist() == [[1.0, 2.0, 1.0], [0.0, 0.0, 1.0]]
    # b left; c joined with a history of its own (counted in full); a is carried over, not recounted.
    hc = [0, 0]
    ha.append(2)
    assert counts.update([c, a], [hc, ha], 3, CPU).tolist() == [[2.0, 0.0, 0.0], [1.0, 2.0, 2.0]]
    # A call for c alone (a joining group of a shared sampler), then both again: a's counts are still right.
    assert counts.update([c], [hc], 3, CPU).tolist() == [[2.0, 0.0, 0.0]]
    assert counts.update([a, c], [ha, hc], 3, CPU).tolist() == [[1.0, 2.0, 2.0], [2.0, 0.0, 0.0]]
    assert counts.update([a], [ha], 4, CPU).tolist() == [[1.0, 2.0, 2.0, 0.0]]  # another width: recounted


def test_penalties_subtract_presence_once_and_frequency_per_occurrence() -> None:
    counts = torch.tensor([[0.0, 1.0, 3.0]])
    scores = torch.tensor([[1.0, 1.0, 1.0]])
    assert Penalties(0.5, 0.0).apply(scores, counts).tolist() == [[1.0, 0.5, 0.5]]
    assert Penalties(0.0, 0.25).apply(scores, counts).tolist() == [[1.0, 0.75, 0.25]]
    assert Penalties(0.5, -0.25).apply(scores, counts).tolist() == [[1.0, 0.75, 1.25]]
    assert not Penalties(0.0, 0.0).active and not Penalties(math.nan, math.nan).active
    assert Penalties(math.inf, 0.0).presence == SAFE_LIMIT


def test_penalties_in_generate_count_only_what_came_after_the_first_call() -> None:
    penalties = Penalties(1.0, 1.0)
    prompt = torch.tensor([[2, 2], [1, 0]])
    assert penalties(prompt, torch.zeros((2, 3))).tolist() == [[0.0] * 3] * 2  # the prompt does not count
    grown = torch.tensor([[2, 2, 1, 1], [1, 0, 2, 0]])
    assert penalties(grown, torch.zeros((2, 3))).tolist() == [[0.0, -3.0, 0.0], [-2.0, 0.0, -2.0]]


def test_top_alternatives() -> None:
    logprobs = torch.log_softmax(torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.5, 0.0, 5.0, 1.0]]), dim=-1)
    assert top_alternatives(logprobs, [0, 0]) is None
    tops = top_alternatives(logprobs, [2, 0])
    assert tops is not None and tops[1] == []
    assert [i for i, _ in tops[0]] == [0, 2]
    assert [lp for _, lp in tops[0]] == pytest.approx([logprobs[0, 0].item(), logprobs[0, 2].item()])
    tops = top_alternatives(logprobs, [1, 3])
    assert tops is not None and [[i for i, _ in t] for t in tops] == [[0], [2, 3, 0]]
    # More than the vocabulary: all of it. A token ruled out (-inf) reports the floor, a number JSON can carry.
    tops = top_alternatives(torch.tensor([[0.0, -math.inf]]), [5])
    assert tops == [[(0, 0.0), (1, LOGPROB_FLOOR)]]


def test_guard_distribution_makes_only_the_rows_without_one_uniform() -> None:
    """A row with a NaN score, one with every score -inf and one with a +inf score have no distribution: their
    scores become uniform and their log-probabilities NaN; rows with -inf scores among finite ones are untouched."""
    inf = math.inf
    scores = torch.tensor(
        [[1.0, 2.0, -inf], [0.5, math.nan, 1.0], [-inf, -inf, -inf], [0.0, inf, 1.0], [-inf, 3.0, -inf]]
    )
    safe, logprobs = guard_distribution(scores)
    valid = [0, 4]
    assert torch.equal(safe[valid], scores[valid])
    assert torch.equal(logprobs[valid], torch.log_softmax(scores[valid], dim=-1))
    assert torch.equal(safe[[1, 2, 3]], torch.zeros(3, 3))
    assert bool(logprobs[[1, 2, 3]].isnan().all())
    fine = torch.tensor([[1.0, -inf], [-inf, 0.0]])
    assert guard_distribution(fine)[0] is fine


def test_top_tokens_cross_the_channel() -> None:
    token = Token(5, "a", -0.5, False, (TopToken(5, "a", -0.5), TopToken(2, "</s>", -1.5, True)))
    assert token_from_json(json.loads(json.dumps(token_to_json(token)))) == token
    plain = Token(5, "a", None, False)
    assert token_from_json(json.loads(json.dumps(token_to_json(plain)))) == plain


# -- the continuous batch, rows of different settings decoded together --


@pytest.fixture(scope="module")
def runner(demo_cache_dir: Path) -> TransformersRunner:
    return TransformersRunner(RunnerConfig(DEMO_CAUSAL_ID, path=str(demo_cache_dir / "tiny-causal-lm"), device="cpu"))


def run_batch(
    runner: TransformersRunner, groups: list[list[tuple[str, GenerationParams]]], steps_between: int = 0
) -> list[list[Token]]:
    """Join each group (one submission) to one running batch, ``steps_between`` decoding steps after each, then
    decode it to the end; each row's tokens."""
    batch = CausalBatch(runner.model, runner.tracker, runner.pad_id, runner.device)
    sinks: list[KeepOutcome] = []
    with torch.inference_mode():
        for group in groups:
            rows = []
            for prompt, params in group:
                sinks.append(KeepOutcome())
                rows.append(Row(runner.encode(prompt), params, time.monotonic() + 60, sinks[-1]))
            batch.join(rows, Sampler(rows[0].params.sampling, runner.device))
            for _ in range(steps_between):
                batch.step()
        while len(batch):
            batch.step()
    outputs = [s.outcome for s in sinks]
    assert all(isinstance(o, GenerationOutput) for o in outputs)
    return [o.tokens for o in outputs if isinstance(o, GenerationOutput)]


def test_rows_of_different_settings_in_one_running_batch(runner: TransformersRunner) -> None:
    z = runner.encode("Z")[-1]
    plain = GenerationParams(max_new_tokens=8)
    wide = GenerationParams(max_new_tokens=6, top_logprobs=3)
    biased = GenerationParams(max_new_tokens=5, sampling=SamplingParams(logit_bias=((z, 100.0),)), top_logprobs=1)
    penalized = GenerationParams(max_new_tokens=9, sampling=SamplingParams(presence_penalty=2.0))
    groups = [
        [("hello", plain), ("a longer prompt here", wide)],  # one sampler, rows asking for different alternatives
        [("xy", biased)],
        [("aaaa", penalized), ("hello", penalized)],
        [("abc", penalized)],  # joins the running penalized rows' sampler (greedy rows of equal settings share)
    ]
    together = run_batch(runner, groups, steps_between=2)
    alone = [run_batch(runner, [[row]])[0] for group in groups for row in group]
    assert [shape(tokens) for tokens in together] == [shape(tokens) for tokens in alone]
    for ours, theirs in zip(together, alone, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
            assert [t.logprob for t in a.top] == pytest.approx([t.logprob for t in b.top], abs=1e-4)
    hello, longer, bias, looping, _, _ = together
    assert [len(t.top) for t in hello] == [0] * 8 and [len(t.top) for t in longer] == [3] * 6
    assert [t.id for t in bias] == [z] * 5 and all(t.top[0].id == z for t in bias)
    assert len({t.id for t in looping}) == 9  # a presence penalty of 2 rules out every repeat on this model


def shape(tokens: list[Token]) -> list[tuple[int, str, list[int]]]:
    return [(t.id, t.text, [a.id for a in t.top]) for t in tokens]
