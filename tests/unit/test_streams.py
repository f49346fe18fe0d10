"""``merge_streams`` (``gateway.streams``): several row streams of one request as one, each event with its index.

The streams are plain async generators shaped like ``ModelService.stream`` (admission, tokens, the final output),
each gated by an ``asyncio.Event`` the test sets, and each noting whether it was closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import pytest

from gateway.errors import GatewayError, ModelError, QueueFull
from gateway.service import StreamEvent
from gateway.stats import RequestStats
from gateway.streams import merge_streams
from gateway.types import FinishReason, GenerationOutput, Token


def token(text: str) -> Token:
    return Token(1, text, None, special=False)


def output(text: str) -> GenerationOutput:
    return GenerationOutput(text=text, finish_reason=FinishReason.LENGTH, prompt_tokens=1, tokens=[token(text)])


@dataclass
class Row:
    """One scripted row stream: ``refuse`` on admission, then each text after its gate opens, then ``fail``."""

    texts: list[str]
    refuse: GatewayError | None = None
    fail: GatewayError | None = None
    gates: list[asyncio.Event] = field(default_factory=list)
    closed: bool = False
    admitted: bool = False

    def __post_init__(self) -> None:
        self.gates = [asyncio.Event() for _ in self.texts]

    async def stream(self) -> AsyncGenerator[StreamEvent, None]:
        try:
            if self.refuse is not None:
                raise self.refuse
            self.admitted = True
            yield StreamEvent()
            for text, gate in zip(self.texts, self.gates, strict=True):
                await gate.wait()
                yield StreamEvent(token=token(text))
            if self.fail is not None:
                raise self.fail
            yield StreamEvent(output=output("".join(self.texts)), stats=RequestStats(model="m"))
        finally:
            self.closed = True

    def open_all(self) -> None:
        for gate in self.gates:
            gate.set()


async def test_events_carry_the_index_of_their_stream_in_order() -> None:
    rows = [Row(["a", "b"]), Row(["x"])]
    merged = merge_streams([r.stream() for r in rows])
    first, second = await anext(merged), await anext(merged)
    assert {first.index, second.index} == {0, 1} and first.admitted and second.admitted
    rows[1].open_all()
    event = await anext(merged)
    assert (event.index, event.token and event.token.text) == (1, "x")
    rows[0].open_all()
    rest = [event async for event in merged]
    by_row = {i: [e for e in rest if e.index == i] for i in (0, 1)}
    assert [e.token.text for e in by_row[0] if e.token] == ["a", "b"] and by_row[0][-1].final
    assert by_row[0][-1].output is not None and by_row[0][-1].output.text == "ab"
    assert len(by_row[1]) == 1 and by_row[1][0].final and by_row[1][0].output is not None
    assert by_row[1][0].output.text == "x"
    assert all(r.closed for r in rows)


async def test_a_refused_row_closes_the_others_and_raises_before_yielding() -> None:
    rows = [Row(["a"]), Row(["b"], refuse=QueueFull(retry_after=1.0)), Row(["c"])]
    merged = merge_streams([r.stream() for r in rows])
    with pytest.raises(QueueFull):
        await anext(merged)
    assert rows[0].admitted and rows[2].admitted  # admitted side by side, then given up
    assert all(r.closed for r in rows)


async def test_an_error_later_ends_the_merged_stream_and_closes_the_rest() -> None:
    rows = [Row(["a", "b"]), Row(["x"], fail=ModelError())]
    merged = merge_streams([r.stream() for r in rows])
    assert [(await anext(merged)).admitted for _ in range(2)] == [True, True]
    rows[1].open_all()
    event = await anext(merged)
    assert event.index == 1 and event.token is not None
    with pytest.raises(ModelError):
        await anext(merged)
    assert all(r.closed for r in rows)  # the healthy row, still waiting on its gate, was closed too
    with pytest.raises(StopAsyncIteration):
        await anext(merged)


async def test_closing_the_merged_stream_closes_every_row() -> None:
    rows = [Row(["a"]), Row(["b"])]
    merged = merge_streams([r.stream() for r in rows])
    await anext(merged)
    await merged.aclose()  # the client went away
    assert all(r.closed for r in rows)


async def test_a_row_whose_first_event_is_its_output_ends_there() -> None:
    async def answered_at_once() -> AsyncGenerator[StreamEvent, None]:
        yield StreamEvent(output=output("done"), stats=RequestStats(model="m"))
        raise AssertionError("read past its final event")  # pragma: no cover

    row = Row(["a"])
    row.open_all()
    events = [event async for event in merge_streams([answered_at_once(), row.stream()])]
    assert sorted(e.index for e in events if e.final) == [0, 1]
    assert len(events) == 4  # the output of row 0; admission, token and output of row 1
