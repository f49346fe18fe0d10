"""Domain types shared by the service, the scheduler and the runners. No HTTP, no torch, no Prometheus."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple


class FinishReason(enum.StrEnum):
    LENGTH = "length"
    EOS = "eos_token"
    STOP = "stop_sequence"


@dataclass(frozen=True)
class SamplingParams:
    """Settings that must be equal for requests to share one ``generate`` call."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    # OpenAI's penalties: subtracted from a token's logit once it appeared (presence) and per appearance (frequency)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit), sorted by id
    seed: int | None = None
    forced_bos_token_id: int | None = None


@dataclass(frozen=True)
class GenerationParams:
    """What one request asks of the model. Values are already validated by the HTTP layer."""

    max_new_tokens: int = 20
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    truncate: int | None = None
    top_logprobs: int = 0  # per chosen token, this many most likely alternatives with their log-probabilities


# Tokens are named tuples rather than frozen dataclasses: as immutable, and built for every row at every decoding
# step and again for every token an answer carries, at about a third of the cost.


class TopToken(NamedTuple):
    """One of the most likely tokens at a step, with its log-probability."""

    id: int
    text: str
    logprob: float
    special: bool = False


class Token(NamedTuple):
    """One generated token: its id, its text (empty for a special token or held back inside a multi-byte
    character), its log-probability (None where it has none) and, when asked for, the step's alternatives."""

    id: int
    text: str
    logprob: float | None
    special: bool
    top: tuple[TopToken, ...] = ()  # the step's most likely tokens, when the row asked for ``top_logprobs``


@dataclass
class GenerationOutput:
    """The result of one row (one prompt or one translation segment)."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    tokens: list[Token]
    seed: int | None = None
    queue_s: float = 0.0
    inference_s: float = 0.0
    first_token_s: float | None = None
    batch_size: int = 1

    @property
    def generated_tokens(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class ModelInfo:
    """What /info and gateway_model_info say about a loaded model."""

    model_id: str
    revision: str
    task: str
    device: str
    dtype: str
    is_demo: bool
    continuous_batching: bool = False  # rows join and leave a running batch (else: one generate per group)
    languages: tuple[str, ...] = ()
    translation_style: str | None = None
