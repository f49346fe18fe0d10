"""How the rows of one submission in the running batch choose their next token.

A ``Sampler`` applies the submission's ``SamplingParams`` to the logits of its rows (penalties, bias, warpers in
vLLM's order) and picks each row's token, greedily or with its own seeded RNG. The running batch
(``causal_batch``) groups rows by sampler and calls ``choose`` once per group per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    LogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from gateway.runners.logits import (
    Alternatives,
    LogitBias,
    Penalties,
    RunningCounts,
    guard_distribution,
    top_alternatives,
)
from gateway.runners.rows import RowState
from gateway.types import SamplingParams

# What a sampler gives for its rows: token ids, their log-probabilities, each row's top alternatives (or None).
Choice = tuple[torch.Tensor, torch.Tensor, list[Alternatives] | None]


class Sampler:
    """How the rows of one submission choose their next token (their ``SamplingParams``), with its own RNG.

    Settings left at their defaults cost nothing per step: each adjustment (penalties, bias, warpers) is built
    only when asked for, and the alternatives of ``top_logprobs`` are computed only for the rows that ask.

    ``degrade`` (an injected ``degrade`` fault): ``repeat`` makes every token after a row's first the first one
    again, ``empty`` makes the first token ``eos_id``.
    """

    def __init__(
        self, params: SamplingParams, device: torch.device, *, degrade: str | None = None, eos_id: int | None = None
    ) -> None:
        self.params = params
        self.degrade = degrade
        self.eos_id = eos_id
        self.seed: int | None = None
        self.generator: torch.Generator | None = None
        if params.do_sample:
            self.seed = params.seed if params.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)).item())
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(self.seed)
        # The order of vLLM: repetition penalty, logit bias, presence and frequency penalties, then (sampling only)
        # the warpers in the order of transformers' generate: temperature, top-k, top-p, typical. The one-generate
        # path (``TransformersRunner.generate_static``) applies them in the same order.
        self.repetition = (
            RepetitionPenaltyLogitsProcessor(params.repetition_penalty) if params.repetition_penalty != 1.0 else None
        )
        self.bias = LogitBias(params.logit_bias) if params.logit_bias else None
        penalties = Penalties(params.presence_penalty, params.frequency_penalty)
        self.penalties = penalties if penalties.active else None
        self.counts = RunningCounts()  # the generated-token counts of this sampler's rows, when penalized
        warpers: list[LogitsProcessor] = []
        if params.do_sample:
            if params.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k:
                warpers.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                warpers.append(TopPLogitsWarper(params.top_p))
            if params.typical_p < 1.0:
                warpers.append(TypicalLogitsWarper(params.typical_p))
        self.warpers = warpers

    def choose(self, logits: torch.Tensor, states: Sequence[RowState]) -> Choice:
        """The token chosen for each of these rows, its log-probability under the processed distribution, and
        the most likely alternatives of the rows that ask for them (``top_logprobs``; None when none does)."""
        scores = logits.float()
        if self.repetition is not None:
            scores = self.repetition(_history(states, scores.device), scores)  # type: ignore[arg-type]
        if self.bias is not None:
            scores = self.bias(None, scores)  # type: ignore[arg-type]
        if self.penalties is not None:
            counts = self.counts.update(states, [s.ids for s in states], scores.shape[-1], scores.device)
            scores = self.penalties.apply(scores, counts)
        for warper in self.warpers:
            scores = warper(None, scores)  # type: ignore[arg-type]  # warpers do not read the ids
        scores, logprobs = guard_distribution(scores)
        if self.generator is not None:
            ids = torch.multinomial(logprobs.exp(), 1, generator=self.generator).squeeze(1)
        else:
            ids = scores.argmax(dim=-1)
        if self.degrade is not None:
            ids = self._degrade(ids, states)
        tops = top_alternatives(logprobs, [s.top_logprobs for s in states])
        return ids, logprobs.gather(1, ids[:, None]).squeeze(1), tops

    def _degrade(self, ids: torch.Tensor, states: Sequence[RowState]) -> torch.Tensor:
        if self.degrade == "empty" and self.eos_id is not None:
            return torch.full_like(ids, self.eos_id)
        forced = [s.ids[0] if s.ids else chosen for s, chosen in zip(states, ids.tolist(), strict=True)]
        return torch.tensor(forced, dtype=ids.dtype, device=ids.device)


def _history(states: Sequence[RowState], device: torch.device) -> torch.Tensor:
    """Prompt and generated ids of each row, padded with the row's own first id (which changes nothing)."""
    seqs = [[*s.row.input_ids, *s.ids] for s in states]
    width = max(len(s) for s in seqs)
    return torch.tensor([[s[0]] * (width - len(s)) + s for s in seqs], dtype=torch.long, device=device)
