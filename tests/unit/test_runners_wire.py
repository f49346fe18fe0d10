"""The model-process wire format (``gateway.runners.wire``): JSON frames only, and every value that crosses."""

from __future__ import annotations

import dataclasses
import json
import socket

import pytest

from gateway.runners.wire import Channel, ChannelClosed, params_from_json, params_to_json
from gateway.types import GenerationParams, SamplingParams


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
            seed=3,
            forced_bos_token_id=11,
        ),
        stop=("end", "\n\n"),
        truncate=9,
    )
    # Every field is set away from its default, so a field the channel forgot would come back different.
    defaults = GenerationParams()
    assert all(getattr(params, f.name) != getattr(defaults, f.name) for f in dataclasses.fields(GenerationParams))
    ours, theirs = params.sampling, defaults.sampling
    assert all(getattr(ours, f.name) != getattr(theirs, f.name) for f in dataclasses.fields(SamplingParams))
    assert params_from_json(json.loads(json.dumps(params_to_json(params)))) == params
