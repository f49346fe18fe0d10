"""Per-row bookkeeping shared by both decode paths: a chosen token becomes text, and the row finishes on its own.

``RowTracker.step`` is called once per row per decoding step with the token just chosen for it. It checks the
row's cancellation and deadline, decodes the token incrementally, and answers the row (``RowSink.on_done``) on
EOS, a stop sequence or its own ``max_new_tokens``. Nothing here imports torch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from gateway.errors import DeadlineExceeded, GatewayError, InvalidRequest, RequestCancelled
from gateway.runners.base import Row, RowSink
from gateway.types import FinishReason, GenerationOutput, Token, TopToken

# The pure-Python incremental decoding (tokenizers without a stream decoder) decodes the last token or two of a row
# twice per step; a slow tokenizer takes tens of microseconds a call. Texts of up to this many ids are kept.
_MEMO_IDS = 8
_MEMO_SIZE = 1 << 16

# A row whose settings left it no distribution to sample from (``logits.guard_distribution``): a 4xx of its own.
_NO_DISTRIBUTION = (
    "the sampling settings left no valid distribution to choose from (temperature, penalties or logit_bias too "
    "extreme for this prompt)"
)


class RowState:
    """One row while it is being generated."""

    __slots__ = (
        "batch_size",
        "done",
        "emitted_text",
        "first_token_at",
        "ids",
        "max_new_tokens",
        "prefix_offset",
        "read_offset",
        "row",
        "seed",
        "sink",
        "started",
        "stop",
        "stream",
        "tokens",
        "top_logprobs",
    )

    def __init__(self, row: Row, stream: Any, seed: int | None, started: float) -> None:
        self.row = row
        self.stream = stream
        self.seed = seed
        self.started = started
        # Copied out of the row: read for every row at every step.
        self.sink: RowSink = row.sink
        self.stop = row.params.stop
        self.max_new_tokens = row.params.max_new_tokens
        self.top_logprobs = max(0, row.params.top_logprobs)
        self.ids: list[int] = []
        self.tokens: list[Token] = []
        self.done = False
        self.prefix_offset = 0
        self.read_offset = 0
        self.emitted_text = ""
        self.first_token_at: float | None = None
        self.batch_size = 1  # the most rows decoded together while this one ran


class RowTracker:
    """Token-to-text and stop conditions for the rows of one model."""

    def __init__(
        self,
        decode: Callable[[Sequence[int]], str],
        decode_stream: Callable[[], Any],
        backend: Any,
        eos_ids: Sequence[int],
        special_ids: frozenset[int],
        token_text: Callable[[int], str] | None = None,
    ) -> None:
        self.decode = decode
        self.decode_stream = decode_stream
        self.backend = backend
        self.eos_ids = frozenset(eos_ids)
        self.special_ids = special_ids
        # The text of one token on its own (the alternatives of ``top_logprobs``).
        self.token_text = token_text or (lambda token_id: decode([token_id]))
        self._short_texts: dict[tuple[int, ...], str] = {}  # decode() of a few ids (``_decode_few``)

    def start(self, row: Row, seed: int | None, started: float | None = None) -> RowState:
        return RowState(row, self.decode_stream(), seed, time.monotonic() if started is None else started)

    def step(
        self,
        state: RowState,
        token_id: int,
        logprob: float | None,
        now: float,
        top: Sequence[tuple[int, float]] | None = None,
    ) -> None:
        """Take the token chosen for ``state``'s row, with its log-probability and, when the row asked for
        ``top_logprobs``, the step's most likely ``(id, log-probability)`` pairs, most likely first."""
        row = state.row
        sink = state.sink
        if sink.cancelled():
            self.finish(state, RequestCancelled())
            return
        if now > row.deadline:
            self.finish(state, DeadlineExceeded(during_generation=True))
            return
        if state.first_token_at is None:
            state.first_token_at = now
        state.ids.append(token_id)
        special = token_id in self.special_ids
        if special:
            text = ""
        elif state.stream is not None:
            # tokenizers' stream decoder: the incremental algorithm below, in Rust (a microsecond per token).
            text = state.stream.step(self.backend, token_id) or ""
            state.emitted_text += text
        else:
            text = self._incremental_text(state)
        if logprob is not None and math.isnan(logprob):
            # No distribution to choose from (``guard_distribution``): this row's settings, not the model, failed.
            self.finish(state, InvalidRequest(_NO_DISTRIBUTION))
            return
        if logprob is not None and not math.isfinite(logprob):
            logprob = None
        token = Token(token_id, text, logprob, special, self._top_tokens(top) if top else ())
        state.tokens.append(token)
        reason: FinishReason | None = None
        if token_id in self.eos_ids:
            reason = FinishReason.EOS
        elif state.stop and text and self._hit_stop(state, len(text)):
            reason = FinishReason.STOP
        elif len(state.ids) >= state.max_new_tokens:
            reason = FinishReason.LENGTH
        if reason is None:
            row.emitted_tokens += 1
            if row.stream:
                sink.on_token(token)
        else:
            self.complete(state, reason, token)

    def _top_tokens(self, top: Sequence[tuple[int, float]]) -> tuple[TopToken, ...]:
        text, special = self.token_text, self.special_ids
        return tuple(TopToken(i, text(i), logprob, i in special) for i, logprob in top)

    @staticmethod
    def _hit_stop(state: RowState, new_chars: int) -> bool:
        # Only the tail can hold a stop sequence that was not there one step ago.
        text = state.emitted_text
        return any(s in text[-(len(s) + new_chars) :] for s in state.stop)

    def _incremental_text(self, state: RowState) -> str:
        # TGI-style incremental detokenization: hold back text that ends inside a multi-byte character.
        decode = self._decode_few
        prefix = decode(state.ids[state.prefix_offset : state.read_offset])
        full = decode(state.ids[state.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            new = full[len(prefix) :]
            state.prefix_offset = state.read_offset
            state.read_offset = len(state.ids)
            state.emitted_text += new
            return new
        return ""

    def _decode_few(self, ids: list[int]) -> str:
        """``decode(ids)``, kept for a few ids: decoding is a pure function of the ids."""
        if len(ids) > _MEMO_IDS:
            return self.decode(ids)
        key = tuple(ids)
        text = self._short_texts.get(key)
        if text is None:
            if len(self._short_texts) >= _MEMO_SIZE:
                self._short_texts.clear()
            text = self._short_texts[key] = self.decode(ids)
        return text

    def complete(self, state: RowState, reason: FinishReason, last: Token) -> None:
        text = self.decode(state.ids)
        if not text.startswith(state.emitted_text):
            text = state.emitted_text
        rest = text[len(state.emitted_text) :]
        if rest:
            # Bytes that were held back (an incomplete character at the very end) go out with the last token.
            last = Token(last.id, last.text + rest, last.logprob, last.special, last.top)
            state.tokens[-1] = last
            state.emitted_text += rest
        state.row.emitted_tokens += 1
        if state.row.stream:
            state.sink.on_token(last)
        now = time.monotonic()
        output = GenerationOutput(
            text=text,
            finish_reason=reason,
            prompt_tokens=len(state.row.input_ids),
            tokens=state.tokens,
            seed=state.seed,
            inference_s=now - state.started,
            first_token_s=(state.first_token_at - state.started) if state.first_token_at else None,
            batch_size=state.batch_size,
        )
        self.finish(state, output)

    def finish(self, state: RowState, outcome: GenerationOutput | GatewayError) -> None:
        state.done = True
        state.row.done = True
        state.sink.on_done(outcome)

    def finish_at_length(self, state: RowState) -> None:
        """Answer a row that ran out of steps without a stop condition of its own."""
        if state.done:
            return
        last = state.tokens[-1] if state.tokens else Token(id=-1, text="", logprob=None, special=True)
        if not state.tokens:
            state.tokens.append(last)
        self.complete(state, FinishReason.LENGTH, last)
