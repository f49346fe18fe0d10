"""The runner seam. A runner is blocking and runs on a worker thread; it knows nothing of HTTP or asyncio.

``generate(rows)`` runs one batch. Each row reports through its ``RowSink``: tokens as they are chosen (for
streaming) and exactly one ``on_done`` with a ``GenerationOutput`` or a ``GatewayError`` (cancelled, deadline).
A row may finish early (its own stop sequence, EOS, cancellation) while the rest of the batch goes on. If
``generate`` raises (``OutOfMemory``, ``ModelError``), the rows that have not had ``on_done`` are not finished
and the caller decides what to do with them (retry in halves, or fail them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.errors import GatewayError
from gateway.types import GenerationOutput, GenerationParams, ModelInfo, Token


class RowSink(Protocol):
    def cancelled(self) -> bool: ...

    def on_token(self, token: Token) -> None: ...

    def on_done(self, outcome: GenerationOutput | GatewayError) -> None: ...


@dataclass
class Row:
    input_ids: list[int]
    params: GenerationParams
    deadline: float
    sink: RowSink
    emitted_tokens: int = 0
    done: bool = field(default=False)


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


class ModelRunner(Protocol):
    info: ModelInfo

    def encode(self, text: str) -> list[int]: ...

    def render_chat(self, user_message: str) -> str | None: ...

    def token_id(self, token: str) -> int | None: ...

    def translation_spec(self, template_languages: Sequence[str]) -> TranslationSpec: ...

    def generate(self, rows: Sequence[Row]) -> None: ...

    def free_memory(self) -> None: ...

    def close(self) -> None: ...
