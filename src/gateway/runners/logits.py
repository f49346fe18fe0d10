"""OpenAI's sampling extras on a batch of next-token scores: logit bias, presence and frequency penalties, and the
most likely alternatives of each chosen token (``top_logprobs``).

Both decode paths use these: the continuous batch's ``Sampler`` calls them directly, and the one-``generate`` path
passes ``LogitBias`` and ``Penalties`` to ``generate`` as logits processors. That path's own processors live here
too: ``LogprobStash`` (the log-probabilities a token was chosen from) and ``Degrade`` (an injected ``degrade``
fault). Values that reach the decode loop are made safe here whatever the HTTP layer let through, because one bad
row must never fail the rows it is batched with: a bias on an id outside the scores is ignored, NaN settings count
as unset, and biases and penalties are clamped to ``SAFE_LIMIT`` (far beyond what the APIs accept: -100..100 and
-2..2).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

SAFE_LIMIT = 100.0
# What an impossible alternative (a token top-k or top-p ruled out) reports instead of -inf, as vLLM does: JSON has
# no infinity, and the APIs' log-probabilities are plain numbers.
LOGPROB_FLOOR = -9999.0


def safe_value(value: float) -> float:
    """``value`` clamped to +-``SAFE_LIMIT``; NaN becomes 0 (no effect)."""
    if math.isnan(value):
        return 0.0
    return max(-SAFE_LIMIT, min(SAFE_LIMIT, value))


def bias_vector(bias: Sequence[tuple[int, float]], vocab: int, device: torch.device) -> torch.Tensor:
    """A ``(vocab,)`` float32 vector with each bias at its token id; ids outside ``0..vocab-1`` are ignored."""
    vector = torch.zeros(vocab, dtype=torch.float32)
    for token_id, value in bias:
        if 0 <= token_id < vocab:
            vector[token_id] += safe_value(value)
    return vector.to(device)


class LogitBias(LogitsProcessor):
    """Adds OpenAI's ``logit_bias`` to the scores of every row (its vector is built once per vocabulary size)."""

    def __init__(self, bias: Sequence[tuple[int, float]]) -> None:
        self.bias = tuple((int(i), float(b)) for i, b in bias)
        self._vector: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.FloatTensor) -> torch.FloatTensor:
        vector = self._vector
        if vector is None or vector.shape[0] != scores.shape[-1] or vector.device != scores.device:
            vector = self._vector = bias_vector(self.bias, scores.shape[-1], scores.device)
        return scores + vector.to(scores.dtype)  # type: ignore[return-value]  # a FloatTensor in all but name


class RunningCounts:
    """How many times each row generated each token, kept from step to step for one sampler's rows.

    ``update`` is called at every step with the rows the sampler chooses for (``keys``, identities) and their
    generated ids so far; it adds only the ids generated since the last call, so a step costs one small scatter
    rather than a recount of every row's history. A row it has not seen (joined, or absent from the last call) is
    counted from its whole history.
    """

    def __init__(self) -> None:
        self.keys: list[object] = []
        self.counted: list[int] = []  # per row: how many of its ids are in ``counts``
        self.counts: torch.Tensor | None = None  # (rows, vocab) float32

    def update(
        self, keys: Sequence[object], histories: Sequence[Sequence[int]], vocab: int, device: torch.device
    ) -> torch.Tensor:
        counts = self.counts
        if counts is None or counts.shape[1] != vocab or not _same(self.keys, keys):
            counts = self._relayout(keys, vocab, device)
        rows: list[int] = []
        ids: list[int] = []
        counted = self.counted
        for r, history in enumerate(histories):
            start = counted[r]
            if len(history) > start:
                for token_id in history[start:]:
                    if 0 <= token_id < vocab:
                        rows.append(r)
                        ids.append(token_id)
                counted[r] = len(history)
        if rows:
            index = (torch.tensor(rows, device=device), torch.tensor(ids, device=device))
            counts.index_put_(index, torch.ones(len(ids), device=device), accumulate=True)
        return counts

    def _relayout(self, keys: Sequence[object], vocab: int, device: torch.device) -> torch.Tensor:
        previous = self.counts if self.counts is not None and self.counts.shape[1] == vocab else None
        # ``self.keys`` holds the rows it names, so no id in it can belong to another object meanwhile.
        where = {id(key): i for i, key in enumerate(self.keys)} if previous is not None else {}
        counts = torch.zeros((len(keys), vocab), dtype=torch.float32, device=device)
        counted = [0] * len(keys)
        kept_new: list[int] = []
        kept_old: list[int] = []
        for n, key in enumerate(keys):
            o = where.get(id(key))
            if o is not None:
                kept_new.append(n)
                kept_old.append(o)
                counted[n] = self.counted[o]
        if previous is not None and kept_new:
            counts[kept_new] = previous[kept_old]
        self.keys, self.counted, self.counts = list(keys), counted, counts
        return counts


def _same(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class Penalties(LogitsProcessor):
    """OpenAI's presence and frequency penalties: a token's score loses ``presence`` once it was generated and
    ``frequency`` per time it was generated. Only generated tokens count, not the prompt (as in OpenAI and vLLM).

    The continuous batch calls ``apply`` with counts it keeps from its rows. As a processor of ``generate`` it
    reads the generated tokens off ``input_ids``: they start at the width ``input_ids`` had on the first call (the
    prompt, or a seq2seq decoder's start token), so one instance serves one ``generate`` call.
    """

    def __init__(self, presence: float, frequency: float) -> None:
        self.presence = safe_value(presence)
        self.frequency = safe_value(frequency)
        self._start: int | None = None

    @property
    def active(self) -> bool:
        return self.presence != 0.0 or self.frequency != 0.0

    def apply(self, scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        penalty = counts * self.frequency
        if self.presence:
            penalty += (counts > 0).to(counts.dtype) * self.presence
        return scores - penalty.to(scores.dtype)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._start is None:
            self._start = input_ids.shape[1]
        generated = input_ids[:, self._start :]
        counts = torch.zeros(scores.shape, dtype=torch.float32, device=scores.device)
        if generated.numel():
            counts.scatter_add_(1, generated, torch.ones(generated.shape, dtype=torch.float32, device=scores.device))
        return self.apply(scores, counts)  # type: ignore[return-value]  # a FloatTensor in all but name


# LogitsProcessorList.__call__ runs inspect.signature() on every processor at every step; one stored on the function
# is returned at once.
LogitBias.__call__.__signature__ = inspect.signature(LogitBias.__call__)  # type: ignore[attr-defined]
Penalties.__call__.__signature__ = inspect.signature(Penalties.__call__)  # type: ignore[attr-defined]


Alternatives = list[tuple[int, float]]


def top_alternatives(logprobs: torch.Tensor, wants: Sequence[int]) -> list[Alternatives] | None:
    """Each row's ``wants[row]`` most likely ``(token id, log-probability)``, most likely first (an empty list for
    a row that asks none); None when no row asks, without touching the tensor.

    ``logprobs`` is ``(rows, vocab)``: the distribution the chosen tokens' own log-probabilities come from. One
    ``topk`` serves every row that asks, at the largest count asked.
    """
    k = max(wants, default=0)
    if k <= 0:
        return None
    k = min(k, logprobs.shape[-1])
    asking = [r for r, n in enumerate(wants) if n > 0]
    rows = logprobs if len(asking) == len(wants) else logprobs[torch.tensor(asking, device=logprobs.device)]
    values, ids = torch.topk(rows.float(), k, dim=-1)
    values = torch.nan_to_num(values, nan=LOGPROB_FLOOR, neginf=LOGPROB_FLOOR).clamp(min=LOGPROB_FLOOR)
    value_lists, id_lists = values.tolist(), ids.tolist()
    out: list[Alternatives] = [[] for _ in wants]
    for j, r in enumerate(asking):
        n = wants[r]
        out[r] = list(zip(id_lists[j][:n], value_lists[j][:n], strict=True))
    return out


def guard_distribution(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores safe to sample from, their log-probabilities) for a step's processed scores.

    Extreme settings (a temperature or a repetition penalty near zero, biases and penalties against every token)
    can leave a row with no distribution: NaN, or every score minus infinity. Sampling from it would fail the
    whole batch. Such a row's scores become uniform, so the step goes on, and its log-probabilities NaN: the
    row tracker answers that row alone with a 4xx (``rows.RowTracker.step``), never the batch or the breaker.
    """
    logprobs = torch.log_softmax(scores, dim=-1)
    # Log-probabilities are never +inf, so their sum is NaN exactly when one of them is: one reduction to a scalar
    # on the common path (a per-row ``isnan().any()`` over a 32,000-token vocabulary takes a millisecond a step).
    if not bool(logprobs.sum().isnan()):
        return scores, logprobs
    invalid = torch.isnan(logprobs).any(dim=-1)
    scores = scores.masked_fill(invalid[:, None], 0.0)
    logprobs = torch.log_softmax(scores, dim=-1).masked_fill(invalid[:, None], float("nan"))
    return scores, logprobs


class LogprobStash(LogitsProcessor):
    """Last in the processor list: keeps the log-probabilities the next token is chosen from."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        safe, self.last = guard_distribution(scores.float())
        return safe.to(scores.dtype)  # type: ignore[return-value]


# LogitsProcessorList.__call__ runs inspect.signature() on every processor at every step; a signature stored on the
# function is returned at once instead of being rebuilt (a few percent of a small model's step time).
LogprobStash.__call__.__signature__ = inspect.signature(LogprobStash.__call__)  # type: ignore[attr-defined]


class Degrade(LogitsProcessor):
    """An injected ``degrade`` fault on the one-``generate``-call path: ``repeat`` forces every token after the
    first to be the first one again, ``empty`` forces end-of-sequence at once."""

    def __init__(self, mode: str, eos_id: int | None) -> None:
        self.mode = mode
        self.eos_id = eos_id
        self.start: int | None = None  # the length of input_ids at the first step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        if self.mode == "empty" and self.eos_id is not None:
            target = torch.full((scores.shape[0],), self.eos_id, dtype=torch.long, device=scores.device)
        elif input_ids.shape[1] > self.start:
            target = input_ids[:, self.start]
        else:
            return scores
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(1, target[:, None], 0.0)
        return forced  # type: ignore[return-value]


Degrade.__call__.__signature__ = inspect.signature(Degrade.__call__)  # type: ignore[attr-defined]
