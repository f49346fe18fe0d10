"""Logits processors of the one-``generate``-call path (``TransformersRunner.generate_static``)."""

from __future__ import annotations

import inspect

import torch
from transformers import LogitsProcessor

__all__ = ["Degrade", "LogprobStash"]


class LogprobStash(LogitsProcessor):
    """Last in the processor list: keeps the log-probabilities the next token is chosen from."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.last = torch.log_softmax(scores.float(), dim=-1)
        return scores


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
