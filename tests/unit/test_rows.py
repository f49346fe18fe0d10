"""``RowTracker``'s pure-Python incremental decoding (tokenizers without a stream decoder), without torch.

The decoder here is byte-level like ByT5's (id = byte + 3, ids below 3 special): a character of several bytes
arrives over several steps and must come out whole, once, and the few-id decodes of each step are kept so that a
slow tokenizer is not asked the same thing again.
"""

from __future__ import annotations

import time

from gateway.errors import GatewayError
from gateway.runners.base import Row
from gateway.runners.rows import RowTracker
from gateway.types import FinishReason, GenerationOutput, GenerationParams, Token

EOS = 1


class ByteDecoder:
    """ByT5's mapping, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, ids: list[int] | tuple[int, ...]) -> str:
        self.calls += 1
        return bytes(i - 3 for i in ids if i >= 3).decode("utf-8", errors="replace")


class Sink:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.outcome: GenerationOutput | GatewayError | None = None

    def cancelled(self) -> bool:
        return False

    def on_token(self, token: Token) -> None:
        self.texts.append(token.text)

    def on_done(self, outcome: GenerationOutput | GatewayError) -> None:
        self.outcome = outcome


def generate(tracker: RowTracker, text: str) -> tuple[Sink, GenerationOutput]:
    """Feed ``text``'s bytes, then EOS, to one streamed row; its sink and output."""
    sink = Sink()
    ids = [b + 3 for b in text.encode()] + [EOS]
    row = Row([5, 6], GenerationParams(max_new_tokens=100), time.monotonic() + 60, sink, stream=True)
    state = tracker.start(row, None)
    for token_id in ids:
        tracker.step(state, token_id, -0.5, time.monotonic())
    assert state.done and isinstance(sink.outcome, GenerationOutput)
    return sink, sink.outcome


def test_characters_of_several_bytes_come_out_whole_and_repeated_decodes_are_kept() -> None:
    decode = ByteDecoder()
    tracker = RowTracker(decode, lambda: None, None, eos_ids=[EOS], special_ids=frozenset({0, 1, 2}))
    text = "naïve café ✓ 🙂 done"
    sink, output = generate(tracker, text)
    assert output.text == text and output.finish_reason is FinishReason.EOS
    assert "".join(sink.texts) == text and all("\ufffd" not in t for t in sink.texts)
    assert "🙂" in sink.texts  # four bytes over four steps, sent as one piece
    first = decode.calls
    assert first >= len(text.encode())  # at least one decode per byte the first time
    # The same bytes again (another row): every few-id decode is known; only the whole text is decoded anew.
    again, output = generate(tracker, text)
    assert output.text == text and again.texts == sink.texts
    assert decode.calls - first == 1
