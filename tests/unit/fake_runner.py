"""A deterministic fake decoder: a ``ModelRunner`` (``gateway.runners.base``) whose decode loop the test drives.

What cannot exist in the unit tier is the model; everything above it (the scheduler, the queue, the work items
and their sinks) is the real code. The fake keeps the runner's contract:

- ``submit(rows)`` returns a ``Submission`` at once; its rows join the running batch (``admitted``) at once;
- ``step()`` decodes one token for every running row: a row's n-th token id is ``input_ids[-1] + n``, its text
  ``<id>``; a row ends on its own when that id is ``EOS`` (``eos_token``, early) or at its ``max_new_tokens``
  (``length``), is dropped with ``RequestCancelled`` once its sink reads cancelled, and fails with
  ``DeadlineExceeded(during_generation=True)`` once the fake's clock is past its deadline (the work item's, which
  is on that clock; ``row.deadline`` is on ``time.monotonic``, the real runner's clock); streamed rows get each token
  through ``on_token``; a submission whose rows are all answered finishes with the most rows decoded together;
- ``fail(error)`` fails live submissions as a failed decoding step would (``OutOfMemory``, ``ModelError``): rows
  not answered yet are left to the caller; ``reset`` fails them all with its reason and counts a new loop;
- not calling ``step()`` is a stalled decode loop.

It runs on the event loop's thread; the sinks (``WorkItem``) still hand every answer to the loop with
``call_soon_threadsafe``, as they do from a runner's thread, so an answer lands one loop iteration later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.errors import DeadlineExceeded, GatewayError, RequestCancelled
from gateway.runners.base import Row, Submission, TranslationSpec
from gateway.types import FinishReason, GenerationOutput, ModelInfo, Token

EOS = 100

FAKE_INFO = ModelInfo(
    model_id="fake/decoder",
    revision="0",
    task="text-generation",
    device="cpu",
    dtype="float32",
    is_demo=True,
    continuous_batching=True,
)


@dataclass
class _Live:
    submission: Submission
    tokens: list[list[Token]]
    size: int = 0  # the most rows decoded together while this submission ran
    steps: int = field(default=0)


def expected_ids(input_ids: Sequence[int], max_new_tokens: int) -> list[int]:
    """The token ids the fake gives a row run to its end."""
    ids = []
    for n in range(1, max_new_tokens + 1):
        ids.append(input_ids[-1] + n)
        if ids[-1] == EOS:
            break
    return ids


class FakeRunner:
    """A ``ModelRunner`` without a model; see the module docstring for what each call does."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, info: ModelInfo = FAKE_INFO) -> None:
        self.info = info
        self._clock = clock
        self.submissions: list[Submission] = []
        self._live: list[_Live] = []
        self.started = False
        self.closed = False
        self.fails_to_start = False
        self.loop_died = False  # the decode loop's thread (or process) is gone
        self.resets: list[GatewayError] = []
        self.largest_batch = 0  # the most rows decoded in one step, over the runner's life
        self.submit_error: Exception | None = None  # raised by the next submit(), once (a bug in a runner)
        self.chat_template = False  # whether ``render_messages`` has a template to render with

    # -- the seam's tokenizing side (not used by the scheduler) --

    max_token_chars = 1  # one token per character

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 50 + 1 for c in text]

    def render_chat(self, user_message: str) -> str | None:
        return self.render_messages([{"role": "user", "content": user_message}])

    def render_messages(self, messages: Sequence[dict[str, str]]) -> str | None:
        """``role: content`` lines and an open assistant turn when ``chat_template`` is set; None (no template)
        otherwise, as a model without one."""
        if not self.chat_template:
            return None
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    def token_id(self, token: str) -> int | None:
        return None

    def translation_spec(self, template_languages: Sequence[str]) -> TranslationSpec:
        return TranslationSpec(style="template", languages=tuple(template_languages))

    # -- lifecycle --

    @property
    def alive(self) -> bool:
        return self.started and not self.closed and not self.loop_died

    def start(self) -> None:
        if self.fails_to_start:
            raise RuntimeError("the decode loop did not start")
        self.started = True

    def close(self) -> None:
        self.closed = True

    def reset(self, reason: GatewayError) -> None:
        """A new decode loop: every submission of the old one fails with ``reason``."""
        self.resets.append(reason)
        self.fail(reason)
        self.loop_died = False

    # -- decoding --

    def submit(self, rows: Sequence[Row]) -> Submission:
        if self.submit_error is not None:
            error, self.submit_error = self.submit_error, None
            raise error
        submission = Submission(list(rows))
        self.submissions.append(submission)
        self._live.append(_Live(submission, [[] for _ in rows]))
        submission.admit(True)
        return submission

    @property
    def running_rows(self) -> list[Row]:
        return [row for live in self._live for row in live.submission.rows if not row.done]

    def sizes(self) -> list[int]:
        """Rows per submission, in the order they were handed over."""
        return [len(s.rows) for s in self.submissions]

    def step(self) -> int:
        """Decode one token for every running row; returns how many rows were decoded."""
        running = [(live, i) for live in self._live for i, row in enumerate(live.submission.rows) if not row.done]
        self.largest_batch = max(self.largest_batch, len(running))
        for live in self._live:
            live.size = max(live.size, len(running))
        now = self._clock()
        for live, i in running:
            self._decode(live, i, now)
        for live in [live for live in self._live if all(row.done for row in live.submission.rows)]:
            self._live.remove(live)
            live.submission.finish(live.size)
        return len(running)

    def _decode(self, live: _Live, i: int, now: float) -> None:
        row = live.submission.rows[i]
        if row.sink.cancelled():
            self._answer(row, RequestCancelled())
            return
        # A work item's deadline is on the injected clock; a bare row's is on time.monotonic.
        if now > getattr(row.sink, "deadline", row.deadline):
            self._answer(row, DeadlineExceeded(during_generation=True))
            return
        tokens = live.tokens[i]
        token_id = row.input_ids[-1] + len(tokens) + 1
        token = Token(token_id, f"<{token_id}>", -0.5, special=token_id == EOS)
        tokens.append(token)
        row.emitted_tokens += 1
        if row.stream:
            row.sink.on_token(token)
        reason = (
            FinishReason.EOS
            if token_id == EOS
            else FinishReason.LENGTH
            if len(tokens) >= row.params.max_new_tokens
            else None
        )
        if reason is not None:
            output = GenerationOutput(
                text="".join(t.text for t in tokens if not t.special),
                finish_reason=reason,
                prompt_tokens=len(row.input_ids),
                tokens=list(tokens),
                seed=row.params.sampling.seed,
                batch_size=live.size,
            )
            self._answer(row, output)

    @staticmethod
    def _answer(row: Row, outcome: GenerationOutput | GatewayError) -> None:
        row.done = True
        row.sink.on_done(outcome)

    def fail(self, error: GatewayError, submission: Submission | None = None) -> None:
        """A decoding step failed: ``submission`` (or every live one) stops; rows not answered stay unanswered."""
        for live in [live for live in self._live if submission is None or live.submission is submission]:
            self._live.remove(live)
            live.submission.fail(error)


async def settle(iterations: int = 20) -> None:
    """Let the event loop run what is ready (answers handed over, the feeder waking), without waiting for time."""
    for _ in range(iterations):
        await asyncio.sleep(0)


async def eventually(predicate: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """A bounded poll: fails the test if ``predicate`` stays false."""
    until = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def decode_until(runner: FakeRunner, predicate: Callable[[], bool], what: str, max_steps: int = 200) -> int:
    """Step the fake decoder (letting the loop run between steps) until ``predicate``; returns the steps taken."""
    for steps in range(max_steps):
        await settle()
        if predicate():
            return steps
        runner.step()
    raise AssertionError(f"{what}: not reached in {max_steps} decoding steps")
