"""``gateway.http.openai.streaming``: held-back stop prefixes (``ChoiceText``), keep-alive ticks
(``with_keepalive``) and the SSE body of an OpenAI stream (``openai_events``) over scripted ``StreamEvent``s."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import pytest

from gateway.errors import ModelError
from gateway.http.openai.serving import answer_text
from gateway.http.openai.streaming import DONE, KEEPALIVE, ChoiceText, StreamShape, openai_events, with_keepalive
from gateway.service import StreamEvent
from gateway.stats import RequestRecord, RequestStats
from gateway.types import FinishReason, GenerationOutput, Token

# -- ChoiceText --


def test_text_that_cannot_start_a_stop_goes_out_at_once() -> None:
    text = ChoiceText(("###",))
    assert text.add("Hello") == "Hello" and text.add(" world") == " world"
    assert text.finish("Hello world") == ""


def test_a_possible_stop_prefix_is_held_back_until_it_is_not_one() -> None:
    text = ChoiceText(("###",))
    assert text.add("a#") == "a"
    assert text.add("#") == ""  # "##" may still become "###"
    assert text.add("b") == "##b"  # it did not
    assert text.sent == "a##b"


def test_a_found_stop_cuts_the_text_and_nothing_after_it_is_sent() -> None:
    text = ChoiceText(("END", "###"))
    assert text.add("one E") == "one "
    assert text.add("ND two") == ""
    assert text.add(" three") == ""
    assert text.finish("one ") == ""  # the final answer is cut at the stop too
    assert text.sent == "one "


def test_the_earliest_of_several_stops_wins() -> None:
    text = ChoiceText(("bb", "a"))
    assert text.add("xbba") == "x"


def test_finish_sends_the_rest() -> None:
    text = ChoiceText(("###",))
    assert text.add("done#") == "done"
    assert text.finish("done#") == "#"  # ended by length: the held-back "#" was text after all


def test_finish_never_unsends() -> None:
    text = ChoiceText(())
    text.add("abc")
    assert text.finish("ab") == "" and text.sent == "abc"


def runner_answer(tokens: Sequence[str], stops: tuple[str, ...]) -> list[str]:
    """The tokens a runner streams: up to the one that completed a stop sequence (its answer keeps the stop)."""
    for n in range(1, len(tokens) + 1):
        if any(stop in "".join(tokens[:n]) for stop in stops):
            return list(tokens[:n])
    return list(tokens)


@pytest.mark.parametrize("stops", [("###",), ("ab", "b#"), ("</s>",), ("x",), ()])
def test_streamed_text_equals_the_final_answer(stops: tuple[str, ...]) -> None:
    pieces = ["a", "b", "#", "#", "x", "</", "s", ">", "ab#", "##", "tail"]
    for cut in itertools.combinations(range(1, len(pieces)), 3):  # many tokenizations of the same text
        tokens = runner_answer(
            ["".join(pieces[i:j]) for i, j in zip((0, *cut), (*cut, len(pieces)), strict=True)], stops
        )
        text = "".join(tokens)
        reason = FinishReason.STOP if any(stop in text for stop in stops) else FinishReason.LENGTH
        answer = answer_text(GenerationOutput(text=text, finish_reason=reason, prompt_tokens=1, tokens=[]), stops)
        choice = ChoiceText(stops)
        streamed = "".join(choice.add(piece) for piece in tokens) + choice.finish(answer)
        assert streamed == answer, (tokens, stops)
        assert not any(stop in streamed for stop in stops)


# -- with_keepalive --


class Gated:
    """An event source that waits for the test before each event, and notes whether it was cancelled."""

    def __init__(self, count: int) -> None:
        self.gate = asyncio.Event()
        self.count = count
        self.cancelled = False

    async def events(self) -> AsyncGenerator[StreamEvent, None]:
        try:
            for _ in range(self.count):
                await self.gate.wait()
                self.gate.clear()
                yield StreamEvent(token=Token(1, "t", None, False))
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_keepalive_ticks_while_waiting_then_the_events() -> None:
    source = Gated(1)
    ticking = with_keepalive(source.events(), interval_s=0.005)
    assert await anext(ticking) is None and await anext(ticking) is None  # nothing yet: a tick per interval
    source.gate.set()
    event = await anext(ticking)
    while event is None:  # a tick may have been on its way
        event = await anext(ticking)
    assert event.token is not None
    with pytest.raises(StopAsyncIteration):
        await anext(ticking)


async def test_keepalive_without_waiting_sends_no_tick() -> None:
    async def ready() -> AsyncGenerator[StreamEvent, None]:
        for _ in range(3):
            yield StreamEvent()

    assert [e is None async for e in with_keepalive(ready(), interval_s=60.0)] == [False, False, False]


async def test_closing_keepalive_cancels_the_pending_read() -> None:
    source = Gated(1)
    ticking = with_keepalive(source.events(), interval_s=0.005)
    assert await anext(ticking) is None
    await ticking.aclose()
    assert source.cancelled


# -- openai_events --


def shape(*, chat: bool, choices: int = 1, stops: tuple[str, ...] = (), include_usage: bool = False) -> StreamShape:
    return StreamShape(
        request_id="rid",
        model="m",
        created=1,
        chat=chat,
        choices=choices,
        copies=choices,
        stops=stops,
        logprobs=False,
        include_usage=include_usage,
    )


def tok(text: str) -> StreamEvent:
    return StreamEvent(token=Token(1, text, -0.1, False))


def final(text: str, reason: FinishReason, index: int = 0, generated: int = 2) -> StreamEvent:
    output = GenerationOutput(text=text, finish_reason=reason, prompt_tokens=3, tokens=[])
    stats = RequestStats(model="m", prompt_tokens=3, generated_tokens=generated, batch_size=1, finish_reason=reason)
    return StreamEvent(output=output, stats=stats, index=index)


async def scripted(events: Sequence[StreamEvent | Exception]) -> AsyncIterator[StreamEvent]:
    for event in events:
        if isinstance(event, Exception):
            raise event
        yield event


async def body(
    stream_shape: StreamShape, events: Sequence[StreamEvent | Exception], record: RequestRecord
) -> list[bytes]:
    return [chunk async for chunk in openai_events(stream_shape, scripted(events), record, keepalive_s=60.0)]


def payloads(chunks: list[bytes]) -> list[dict[str, object]]:
    assert chunks[-1] == DONE
    return [json.loads(c.removeprefix(b"data: ")) for c in chunks[:-1] if c != KEEPALIVE]


async def test_a_chat_stream_sends_the_role_the_content_the_reason_and_usage() -> None:
    record = RequestRecord(request_id="rid", route="/v1/chat/completions")
    events = [StreamEvent(), tok("Hi"), tok(" there##"), final("Hi there##", FinishReason.STOP)]
    chunks = payloads(await body(shape(chat=True, stops=("##",), include_usage=True), events, record))
    role, *content, last, usage = chunks
    assert role["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    assert role["object"] == "chat.completion.chunk" and role["id"] == "chatcmpl-rid"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in [*content, last])  # type: ignore[index]
    assert text == "Hi there"  # the stop sequence never reaches the client
    assert last["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert record.generated_tokens == 2 and record.finish_reason == "stop_sequence" and record.error_type is None


async def test_a_completion_stream_of_two_choices_keeps_them_apart() -> None:
    record = RequestRecord(request_id="rid", route="/v1/completions")
    events = [
        StreamEvent(index=0),
        StreamEvent(index=1),
        StreamEvent(token=Token(1, "a", None, False), index=1),
        StreamEvent(token=Token(1, "b", None, False), index=0),
        final("b", FinishReason.LENGTH, index=0, generated=1),
        final("a", FinishReason.EOS, index=1, generated=1),
    ]
    chunks = payloads(await body(shape(chat=False, choices=2), events, record))
    texts = {0: "", 1: ""}
    reasons = {}
    for chunk in chunks:
        assert chunk["object"] == "text_completion" and "usage" not in chunk
        for choice in chunk["choices"]:  # type: ignore[attr-defined]
            texts[choice["index"]] += choice["text"]
            if choice["finish_reason"]:
                reasons[choice["index"]] = choice["finish_reason"]
    assert texts == {0: "b", 1: "a"} and reasons == {0: "length", 1: "stop"}
    assert record.generated_tokens == 2 and record.finish_reason == "length"


async def test_an_error_mid_stream_is_an_error_event_then_done() -> None:
    record = RequestRecord(request_id="rid", route="/v1/completions")
    chunks = await body(shape(chat=False), [StreamEvent(), tok("a"), ModelError("boom")], record)
    error = payloads(chunks)[-1]
    assert error == {"error": {"message": "boom", "type": "server_error", "param": None, "code": "model_error"}}
    assert chunks[-1] == DONE and (record.status, record.error_type) == ("server_error", "model_error")


async def test_an_idle_stream_sends_keepalive_comments() -> None:
    source = Gated(1)
    record = RequestRecord(request_id="rid", route="/v1/completions")

    async def events() -> AsyncIterator[StreamEvent]:
        async for event in source.events():
            yield event
        yield final("t", FinishReason.LENGTH, generated=1)

    stream = openai_events(shape(chat=False), events(), record, keepalive_s=0.005)
    assert await anext(stream) == KEEPALIVE
    source.gate.set()
    rest = [chunk async for chunk in stream]
    assert rest[-1] == DONE and "".join(p["choices"][0]["text"] for p in payloads(rest) if p["choices"]) == "t"  # type: ignore[index]
