"""The runner seam. A runner decodes on a thread (or a process) of its own; it knows nothing of HTTP or asyncio.

``submit(rows)`` hands over one group of rows with equal sampling settings and returns a ``Submission`` at
once. Each row reports through its ``RowSink`` (called from the runner's thread): tokens as they are chosen
(streaming rows only) and exactly one ``on_done`` with a ``GenerationOutput`` or a ``GatewayError`` (cancelled,
deadline). A row may finish early (its own stop sequence, EOS, cancellation) while the rest go on. If the
submission fails (``submission.done`` raises ``OutOfMemory``, ``ModelError`` or ``WorkerStalled``), its rows
that have not had ``on_done`` are not finished and the caller decides what to do with them (retry in halves,
or fail them).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.errors import GatewayError
from gateway.runners.faults import FaultPlan
from gateway.types import GenerationOutput, GenerationParams, ModelInfo, Token


class RowSink(Protocol):
    def cancelled(self) -> bool: ...

    def on_token(self, token: Token) -> None: ...

    def on_done(self, outcome: GenerationOutput | GatewayError) -> None: ...


@dataclass
class Row:
    input_ids: list[int]
    params: GenerationParams
    deadline: float  # on time.monotonic, the clock the gateway and its model processes share
    sink: RowSink
    stream: bool = False  # the client reads tokens as they come: ``on_token`` is called only for such rows
    # Tokens chosen so far. Across a model process the gateway's copy counts only streamed rows' tokens.
    emitted_tokens: int = 0
    done: bool = field(default=False)


@dataclass(eq=False)
class Submission:
    """One group of rows handed to a runner, and how it went (both futures are completed from its thread)."""

    rows: list[Row]
    fault: FaultPlan | None = None  # an injected fault this submission will meet (``FaultInjector``)
    # True once the rows are in the running batch (or, on the one-batch-per-call path, have run); False if not.
    admitted: Future[bool] = field(default_factory=Future)
    # The most rows decoded together while these ran; or the error that stopped the rows not yet answered.
    done: Future[int] = field(default_factory=Future)

    # Each of these may race with a reset on another thread: whichever comes first settles the futures.

    def admit(self, ok: bool = True) -> None:
        """The rows joined the running batch (``ok``), or will not."""
        _complete(self.admitted, ok)

    def finish(self, size: int) -> None:
        """Every row was answered; ``size``: the most rows decoded together meanwhile."""
        _complete(self.admitted, True)
        _complete(self.done, size)

    def fail(self, error: GatewayError) -> None:
        """The rows not answered yet were stopped by ``error``."""
        _complete(self.admitted, False)
        _complete(self.done, error=error)


def _complete(future: Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Complete a future unless it is already complete."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


@dataclass(frozen=True)
class TranslationSpec:
    """How a model translates: its style and the language codes (ISO 639-1 base codes) it accepts.

    styles: ``target_token`` (a ``>>xx<<`` token before the source, Marian multilingual style),
    ``forced_bos`` (NLLB/M2M100: the target language token forced as the first generated token),
    ``t5_prefix`` ("translate English to German: ..."), ``fixed_pair`` (one source and one target language),
    ``template`` (a causal LM driven by a prompt template).
    """

    style: str
    languages: tuple[str, ...]
    source_languages: tuple[str, ...] = ()
    language_tokens: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunnerConfig:
    """How to load one model: what every runner is built from, in this process or in a model process."""

    model_id: str
    path: str | None = None  # a local directory; None: ``model_id`` from the hub
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    is_demo: bool = False
    log_level: str = "info"


class TextCodec(Protocol):
    """The tokenizer side of a model: runs on the event loop, never decodes."""

    info: ModelInfo
    vocab_size: int  # token ids are 0..vocab_size-1 (a ``logit_bias`` id outside them is the client's error)
    # The most characters one token stands for: a prompt of more than ``n * max_token_chars`` characters has more
    # than ``n`` tokens, which the gateway can tell before tokenizing it.
    max_token_chars: int

    def encode(self, text: str) -> list[int]: ...

    def render_chat(self, user_message: str) -> str | None: ...

    def render_messages(self, messages: Sequence[dict[str, str]]) -> str | None: ...

    def token_id(self, token: str) -> int | None: ...

    def translation_spec(self, template_languages: Sequence[str]) -> TranslationSpec: ...


class Decoder(Protocol):
    """The decoding side of a model: its decode loop, fed submissions of rows (the scheduler's only seam)."""

    @property
    def alive(self) -> bool: ...

    def start(self) -> None: ...

    def submit(self, rows: Sequence[Row]) -> Submission: ...

    def reset(self, reason: GatewayError) -> None: ...

    def close(self) -> None: ...


class ModelRunner(TextCodec, Decoder, Protocol):
    """A loaded model: its tokenizer side (``TextCodec``) and its decode loop (``Decoder``)."""
