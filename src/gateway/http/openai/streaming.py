"""OpenAI's streamed answers: ``data: {chunk}`` lines, keep-alive comments while nothing is sent, ``data: [DONE]``.

Chat: the first chunk of each choice carries the role, each content chunk ``finish_reason: null``, a last chunk
per choice carries its reason; with ``stream_options.include_usage``, a final chunk with ``usage`` and
``choices: []``. A stream that fails after it started sends ``data: {"error": {...}}`` and then ``[DONE]``.
The streamed text of a choice equals its plain answer: text that may be the start of a stop sequence is held
back until it is known not to be one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway.errors import GatewayError
from gateway.http.errors import error_body, note_error
from gateway.http.openai.serving import (
    answer_text,
    chat_logprobs,
    completion_logprobs,
    envelope,
    finish_reason,
    usage,
)
from gateway.http.responses import dumps
from gateway.service import StreamEvent
from gateway.stats import RequestRecord, RequestStats

KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + dumps(payload) + b"\n\n"


class ChoiceText:
    """One choice's streamed text, holding back what may still turn out to be a stop sequence."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.seen = ""
        self.sent = ""

    def add(self, text: str) -> str:
        """The delta that is safe to send once ``text`` was generated."""
        self.seen += text
        safe = len(self.seen)
        for stop in self.stops:
            found = self.seen.find(stop)
            if found >= 0:
                safe = min(safe, found)
            for size in range(min(len(stop) - 1, len(self.seen)), 0, -1):
                if self.seen.endswith(stop[:size]):
                    safe = min(safe, len(self.seen) - size)
                    break
        return self._send(self.seen[:safe])

    def finish(self, text: str) -> str:
        """The rest of the final text."""
        return self._send(text)

    def _send(self, text: str) -> str:
        if not text.startswith(self.sent):
            return ""
        delta = text[len(self.sent) :]
        self.sent = text
        return delta


async def with_keepalive(
    events: AsyncIterator[StreamEvent], interval_s: float
) -> AsyncGenerator[StreamEvent | None, None]:
    """``events``, with a None whenever ``interval_s`` passes without one (the caller sends a comment line)."""
    pending: asyncio.Future[StreamEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=interval_s)
            if not done:
                yield None
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield event
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending


@dataclass
class StreamShape:
    """How one request's chunks look: chat or text completion, and what the client asked to see."""

    request_id: str
    model: str
    created: int
    chat: bool
    choices: int  # rows streamed (prompts times copies)
    copies: int  # ``n``: choices per prompt
    stops: tuple[str, ...]
    logprobs: bool
    include_usage: bool

    def chunk(self, choices: list[dict[str, Any]], usage_: dict[str, int] | None = None) -> bytes:
        body = envelope(self.chat, self.request_id, self.model, self.created)
        body["object"] = "chat.completion.chunk" if self.chat else "text_completion"
        body["choices"] = choices
        if self.include_usage:
            body["usage"] = usage_
        return sse(body)

    def choice(self, index: int, text: str, logprobs: Any, reason: str | None, role: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}
        delta: dict[str, Any] = {"role": "assistant", "content": text} if role else {}
        if text and not role:
            delta["content"] = text
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}


async def openai_events(
    shape: StreamShape,
    events: AsyncIterator[StreamEvent],
    record: RequestRecord,
    keepalive_s: float,
) -> AsyncIterator[bytes]:
    """The SSE body of one OpenAI stream (see the module docstring); the request's stats go into ``record``."""
    texts = [ChoiceText(shape.stops) for _ in range(shape.choices)]
    finished: list[RequestStats] = []
    ticking = with_keepalive(events, keepalive_s)
    try:
        if shape.chat:
            yield shape.chunk([shape.choice(i, "", None, None, role=True) for i in range(shape.choices)])
        async for event in ticking:
            if event is None:
                yield KEEPALIVE
            elif event.token is not None:
                delta = texts[event.index].add(event.token.text)
                logprobs = _logprobs(shape, [event.token], len(texts[event.index].sent) - len(delta))
                if delta or logprobs is not None:
                    yield shape.chunk([shape.choice(event.index, delta, logprobs, None)])
            elif event.output is not None and event.stats is not None:
                finished.append(event.stats)
                rest = texts[event.index].finish(answer_text(event.output, shape.stops))
                yield shape.chunk([shape.choice(event.index, rest, None, finish_reason(event.output))])
        stats = _total(finished, record)
        record.add(stats)
        if shape.include_usage:
            yield shape.chunk([], usage(stats, shape.copies))
    except GatewayError as exc:
        note_error(record, exc)
        yield sse(error_body(exc, record.request_id, record.route))
    finally:
        await ticking.aclose()
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
    yield DONE


def _logprobs(shape: StreamShape, tokens: list[Any], offset: int) -> Any:
    if not shape.logprobs:
        return None
    return chat_logprobs(tokens) if shape.chat else completion_logprobs(tokens, offset)


def _total(parts: list[RequestStats], record: RequestRecord) -> RequestStats:
    """One request's stats from those of its rows."""
    if not parts:
        return RequestStats(model=record.model)
    first = parts[0]
    return RequestStats(
        model=first.model,
        prompt_tokens=sum(p.prompt_tokens for p in parts),
        generated_tokens=sum(p.generated_tokens for p in parts),
        queue_s=max(p.queue_s or 0.0 for p in parts),
        inference_s=max(p.inference_s or 0.0 for p in parts),
        first_token_s=min((p.first_token_s for p in parts if p.first_token_s is not None), default=None),
        batch_size=max(p.batch_size or 0 for p in parts),
        finish_reason="length" if any(p.finish_reason == "length" for p in parts) else first.finish_reason,
    )
