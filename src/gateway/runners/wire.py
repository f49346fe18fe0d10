"""The channel between the gateway and its model process, and its wire format (the one place it is written down).

JSON only (never pickle): a frame is a 4-byte big-endian length and a UTF-8 JSON object, written and read with
orjson. This module also turns the values that cross the channel (config, params, tokens, outputs, errors) into
JSON and back. No torch here. Every message is an object whose ``t`` names its kind:

Gateway -> model process
    ``config``  first: ``RunnerConfig`` fields (``config_to_json``)
    ``submit``  ``{"id", "rows": [{"id", "ids", "params", "deadline", "stream"}], "fault"}``: one submission
    ``cancel``  ``{"ids": [row id, ...]}``: rows whose client left (or that were answered) stop within a step
    ``wake``    ends an injected stall
    ``stop``    finish and exit
Model process -> gateway
    ``ready``   first, on success: ``{"info": {"device", "dtype"}, "continuous"}``; or ``failed``: ``{"error"}``
    ``events``  ``{"e": [event, ...]}`` in the order they happened, batched by a sender thread:
                ``["t", row, token]`` a streamed row's token; ``["d", row, output, error]`` a row answered;
                ``["a", submission, ok]`` admitted to the batch; ``["s", submission, size, error]`` settled
    ``memory``  ``{"device", "allocated", "reserved"}``: torch's CUDA allocator, once a second on a GPU
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import fields
from typing import Any

import orjson

from gateway.errors import (
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    ModelError,
    OutOfMemory,
    RequestCancelled,
    WorkerStalled,
)
from gateway.runners.base import RunnerConfig
from gateway.types import FinishReason, GenerationOutput, GenerationParams, SamplingParams, Token, TopToken

_HEADER = struct.Struct("!I")
MAX_FRAME_BYTES = 256 * 1024 * 1024  # far beyond any real frame; a larger length means a corrupt stream


class ChannelClosed(Exception):
    """The other end went away."""


class Channel:
    """One end of the socket pair. ``send`` may be called from any thread; ``recv`` from one thread only."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        self.send_frame(frame(message))

    def send_frame(self, data: bytes) -> None:
        """Send a whole frame (``frame``), waiting for room in the socket as long as it takes."""
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc

    def try_send(self, data: bytes) -> int:
        """Send what the socket takes of ``data`` now, without waiting; returns how many bytes that was."""
        with self._send_lock:
            try:
                return self.sock.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return 0
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc

    def recv(self) -> dict[str, Any]:
        (length,) = _HEADER.unpack(self._read(_HEADER.size))
        if length > MAX_FRAME_BYTES:
            raise ChannelClosed(f"frame of {length} bytes")
        message = orjson.loads(self._read(length))  # not JSON (a pickle, say): ValueError
        if not isinstance(message, dict):
            raise ChannelClosed("frame is not a JSON object")
        return message

    def _read(self, n: int) -> bytes:
        chunks = []
        while n:
            try:
                chunk = self.sock.recv(min(n, 1 << 20))
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not chunk:
                raise ChannelClosed("end of stream")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Sender:
    """Messages for a ``Channel``, in order, never waiting on the socket: whoever sends (the gateway's event loop)
    writes what the socket takes at once, and a thread of the sender's own writes the rest, and every message
    after it, as the other end reads. A model process that stopped reading used to hold the event loop for good
    once the socket's buffer was full. (Handing every message to the thread instead cost the uniform load about
    3%: the thread then waits for the event loop's GIL before each submission goes out.)

    After the channel fails, or ``close``, ``send`` raises ``ChannelClosed``; bytes still waiting are dropped (the
    reader of the other direction sees the end of the stream and fails what was outstanding).
    """

    def __init__(self, channel: Channel, name: str) -> None:
        self.channel = channel
        self._waiting: list[bytes] = []  # frames (or a frame's rest) for the thread, in order
        self._busy = False  # the thread holds frames it took and is sending them
        self._condition = threading.Condition(threading.Lock())
        self._closed = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def send(self, message: dict[str, Any]) -> None:
        data = frame(message)
        with self._condition:
            if self._closed:
                raise ChannelClosed("channel closed")
            if not self._waiting and not self._busy:
                try:
                    sent = self.channel.try_send(data)
                except ChannelClosed:
                    self._closed = True
                    raise
                if sent == len(data):
                    return
                data = data[sent:]
            self._waiting.append(data)
            self._condition.notify()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                self._busy = False
                while not self._waiting and not self._closed:
                    self._condition.wait()
                if self._closed:
                    return
                frames, self._waiting = self._waiting, []
                self._busy = True
            try:
                for data in frames:
                    self.channel.send_frame(data)
            except ChannelClosed:
                self.close()
                return


def frame(message: dict[str, Any]) -> bytes:
    """``message`` as the channel carries it: its length, then its JSON."""
    data = orjson.dumps(message)
    return _HEADER.pack(len(data)) + data


# -- values --


_SAMPLING_FIELDS = tuple(f.name for f in fields(SamplingParams))


def params_to_json(params: GenerationParams) -> dict[str, Any]:
    # Field by field rather than ``dataclasses.asdict``, which deep-copies every value (once per row sent).
    sampling = params.sampling
    return {
        "max_new_tokens": params.max_new_tokens,
        "sampling": {name: getattr(sampling, name) for name in _SAMPLING_FIELDS},
        "stop": list(params.stop),
        "truncate": params.truncate,
        "top_logprobs": params.top_logprobs,
    }


def params_from_json(data: dict[str, Any]) -> GenerationParams:
    return GenerationParams(
        max_new_tokens=int(data["max_new_tokens"]),
        sampling=_sampling_from_json(data["sampling"]),
        stop=tuple(data["stop"]),
        truncate=data["truncate"],
        top_logprobs=int(data.get("top_logprobs", 0)),
    )


def _sampling_from_json(data: dict[str, Any]) -> SamplingParams:
    values = dict(data)
    values["logit_bias"] = tuple((int(i), float(b)) for i, b in values.get("logit_bias", ()))
    return SamplingParams(**values)


def token_to_json(token: Token) -> list[Any]:
    if token.top:
        top = [[t.id, t.text, t.logprob, t.special] for t in token.top]
        return [token.id, token.text, token.logprob, token.special, top]
    return [token.id, token.text, token.logprob, token.special]


def token_from_json(data: list[Any]) -> Token:
    # The model process wrote it (``token_to_json``), and JSON keeps each field's type: no conversions needed.
    if len(data) > 4:
        return Token(data[0], data[1], data[2], data[3], tuple(TopToken._make(t) for t in data[4]))
    return Token(*data)


def output_to_json(output: GenerationOutput) -> dict[str, Any]:
    return {
        "text": output.text,
        "finish_reason": output.finish_reason.value,
        "prompt_tokens": output.prompt_tokens,
        "tokens": [token_to_json(t) for t in output.tokens],
        "seed": output.seed,
        "inference_s": output.inference_s,
        "first_token_s": output.first_token_s,
        "batch_size": output.batch_size,
    }


def output_from_json(data: dict[str, Any]) -> GenerationOutput:
    return GenerationOutput(
        text=str(data["text"]),
        finish_reason=FinishReason(data["finish_reason"]),
        prompt_tokens=int(data["prompt_tokens"]),
        tokens=[token_from_json(t) for t in data["tokens"]],
        seed=data["seed"],
        inference_s=float(data["inference_s"]),
        first_token_s=data["first_token_s"],
        batch_size=int(data["batch_size"]),
    )


_ERRORS: dict[str, type[GatewayError]] = {
    cls.error_type: cls
    for cls in (ModelError, OutOfMemory, WorkerStalled, DeadlineExceeded, RequestCancelled, InvalidRequest)
}


def error_to_json(error: GatewayError) -> dict[str, Any]:
    return {
        "type": error.error_type,
        "message": error.message,
        "during_generation": bool(getattr(error, "during_generation", False)),
    }


def error_from_json(data: dict[str, Any]) -> GatewayError:
    cls = _ERRORS.get(str(data.get("type")), ModelError)
    message = str(data.get("message") or "") or None
    if cls is DeadlineExceeded:
        return DeadlineExceeded(message, during_generation=bool(data.get("during_generation")))
    return cls(message)


def config_to_json(config: RunnerConfig) -> dict[str, Any]:
    return {"t": "config", **{f.name: getattr(config, f.name) for f in fields(RunnerConfig)}}


def config_from_json(data: dict[str, Any]) -> RunnerConfig:
    return RunnerConfig(**{f.name: data[f.name] for f in fields(RunnerConfig) if f.name in data})
