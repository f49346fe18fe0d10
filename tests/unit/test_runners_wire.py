"""The model-process wire format (``gateway.runners.wire``): JSON frames only, and every value that crosses."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading

import pytest

from gateway.errors import (
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    ModelError,
    OutOfMemory,
    RequestCancelled,
    WorkerStalled,
)
from gateway.runners.wire import (
    Channel,
    ChannelClosed,
    error_from_json,
    error_to_json,
    output_from_json,
    output_to_json,
    params_from_json,
    params_to_json,
    token_from_json,
    token_to_json,
)
from gateway.types import FinishReason, GenerationOutput, GenerationParams, SamplingParams, Token


def test_the_channel_carries_json_frames_only() -> None:
    ours, theirs = socket.socketpair()
    a, b = Channel(ours), Channel(theirs)
    a.send({"t": "submit", "rows": [{"id": 1, "ids": [1, 2]}]})
    assert b.recv() == {"t": "submit", "rows": [{"id": 1, "ids": [1, 2]}]}
    ours.sendall(len(b"\x80\x04K\x01.").to_bytes(4, "big") + b"\x80\x04K\x01.")  # a pickle frame
    with pytest.raises(ValueError):
        b.recv()
    ours.sendall((2**31).to_bytes(4, "big"))  # an absurd length: refused before reading it
    with pytest.raises(ChannelClosed):
        b.recv()
    a.close()
    b.close()


def test_every_generation_setting_crosses_the_channel() -> None:
    params = GenerationParams(
        max_new_tokens=7,
        sampling=SamplingParams(
            do_sample=True,
            temperature=0.5,
            top_k=4,
            top_p=0.9,
            typical_p=0.8,
            repetition_penalty=1.2,
            presence_penalty=0.5,
            frequency_penalty=-0.25,
            logit_bias=((7, 2.5), (40, -100.0)),
            seed=3,
            forced_bos_token_id=11,
        ),
        stop=("end", "\n\n"),
        truncate=9,
        top_logprobs=3,
    )
    # Every field is set away from its default, so a field the channel forgot would come back different.
    defaults = GenerationParams()
    assert all(getattr(params, f.name) != getattr(defaults, f.name) for f in dataclasses.fields(GenerationParams))
    ours, theirs = params.sampling, defaults.sampling
    assert all(getattr(ours, f.name) != getattr(theirs, f.name) for f in dataclasses.fields(SamplingParams))
    assert params_from_json(json.loads(json.dumps(params_to_json(params)))) == params


@pytest.mark.timeout(10)
def test_frames_are_read_whole_across_short_reads() -> None:
    ours, theirs = socket.socketpair()
    a, b = Channel(ours), Channel(theirs)
    big = {"t": "tokens", "text": "x" * 3_000_000}  # more than the socket buffers hold: sent while it is read
    sender = threading.Thread(target=a.send, args=(big,))
    sender.start()
    assert b.recv() == big
    sender.join(5)
    frame = orjson_frame({"t": "ping"})
    for byte in frame:  # and one byte at a time
        ours.sendall(bytes([byte]))
    assert b.recv() == {"t": "ping"}
    ours.sendall(orjson_frame([1, 2]))  # JSON, but not an object
    with pytest.raises(ChannelClosed):
        b.recv()
    a.close()
    with pytest.raises(ChannelClosed):
        b.recv()  # the other end went away
    b.close()


def orjson_frame(message: object) -> bytes:
    data = json.dumps(message).encode()
    return len(data).to_bytes(4, "big") + data


def test_tokens_and_outputs_cross_unchanged() -> None:
    tokens = [Token(5, "he", -0.25, False), Token(0, "", None, True), Token(9, "llo ✓", -1.5, False)]
    output = GenerationOutput(
        text="hello ✓",
        finish_reason=FinishReason.STOP,
        prompt_tokens=3,
        tokens=tokens,
        seed=42,
        inference_s=0.5,
        first_token_s=0.125,
        batch_size=7,
    )
    assert [token_from_json(json.loads(json.dumps(token_to_json(t)))) for t in tokens] == tokens
    assert output_from_json(json.loads(json.dumps(output_to_json(output)))) == output


@pytest.mark.parametrize(
    "error",
    [
        ModelError("boom"),
        InvalidRequest("no distribution"),
        OutOfMemory(),
        WorkerStalled(),
        DeadlineExceeded(during_generation=True),
        DeadlineExceeded(),
        RequestCancelled(),
    ],
    ids=repr,
)
def test_errors_cross_with_their_type_and_flags(error: GatewayError) -> None:
    back = error_from_json(json.loads(json.dumps(error_to_json(error))))
    assert type(back) is type(error) and back.message == error.message
    assert getattr(back, "during_generation", None) == getattr(error, "during_generation", None)


def test_an_unknown_error_type_becomes_a_model_error() -> None:
    back = error_from_json({"type": "something_new", "message": ""})
    assert type(back) is ModelError and back.message == ModelError.public_message
