"""The model process: loads one model, runs its decode loop, and talks to the gateway over a JSON channel.

Started by ``ProcessRunner`` as ``python -m gateway.runners.model_process --fd N`` with one end of a socket pair.
The gateway process keeps HTTP, tokenizing and answering; this one keeps torch. Two interpreters, two GILs: the
event loop never waits on the model's Python, and the model never waits on the event loop.

The messages are listed in ``wire``. SIGINT and SIGTERM are ignored: the gateway decides when this process ends
(``stop``, or its end of the channel closing).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from concurrent.futures import Future
from typing import Any

from gateway.errors import GatewayError, ModelError
from gateway.heap import freeze_startup_heap
from gateway.logs import configure_logging, route_stderr_to_log
from gateway.runners.base import Row, Submission
from gateway.runners.faults import FaultPlan
from gateway.runners.wire import (
    Channel,
    ChannelClosed,
    config_from_json,
    error_to_json,
    output_to_json,
    params_from_json,
    token_to_json,
)
from gateway.types import GenerationOutput, Token

log = logging.getLogger("gateway.model_process")

_MEMORY_EVERY_S = 1.0


class _Outbox:
    """Events for the gateway, in the order they happened, sent by a thread of their own in as few frames as they
    come.

    The decode loop's own events (tokens, answers, admissions) wait for the end of its forward pass: ``flush``,
    called from the runner's ``after_pass`` hook, wakes the sender once per pass instead of once per event (the
    sender's Python shares this process's GIL with the decode loop, and it encodes while torch runs). Events
    from any other thread (a stop, a failure found elsewhere) wake it at once.
    """

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._events: list[list[Any]] = []
        self._condition = threading.Condition()
        self._loop_thread: int | None = None  # the thread that flushes: its events wait for its flush
        threading.Thread(target=self._send_loop, name="gateway-outbox", daemon=True).start()

    def put(self, event: list[Any]) -> None:
        with self._condition:
            self._events.append(event)
            if threading.get_ident() != self._loop_thread:
                self._condition.notify()

    def flush(self) -> None:
        self._loop_thread = threading.get_ident()
        with self._condition:
            if self._events:
                self._condition.notify()

    def _send_loop(self) -> None:
        while True:
            with self._condition:
                while not self._events:
                    self._condition.wait()
                events, self._events = self._events, []
            try:
                self.channel.send({"t": "events", "e": events})
            except ChannelClosed:
                return


class _Sink:
    """A row's ``RowSink`` here: its reports become events; the gateway's cancel messages set ``cancel``."""

    __slots__ = ("cancel", "outbox", "rid", "sinks")

    def __init__(self, rid: int, outbox: _Outbox, sinks: dict[int, _Sink]) -> None:
        self.rid = rid
        self.outbox = outbox
        self.sinks = sinks
        self.cancel = False

    def cancelled(self) -> bool:
        return self.cancel

    def on_token(self, token: Token) -> None:
        self.outbox.put(["t", self.rid, token_to_json(token)])

    def on_done(self, outcome: GenerationOutput | GatewayError) -> None:
        self.sinks.pop(self.rid, None)
        if isinstance(outcome, GenerationOutput):
            self.outbox.put(["d", self.rid, output_to_json(outcome), None])
        else:
            self.outbox.put(["d", self.rid, None, error_to_json(outcome)])


def _report_submission(outbox: _Outbox, sid: int, submission: Submission) -> None:
    def admitted(future: Future[bool]) -> None:
        outbox.put(["a", sid, bool(future.result())])

    def done(future: Future[int]) -> None:
        error = future.exception()
        if error is None:
            outbox.put(["s", sid, future.result(), None])
        else:
            gateway_error = error if isinstance(error, GatewayError) else ModelError()
            outbox.put(["s", sid, None, error_to_json(gateway_error)])

    submission.admitted.add_done_callback(admitted)
    submission.done.add_done_callback(done)


def _submission(message: dict[str, Any], outbox: _Outbox, sinks: dict[int, _Sink]) -> Submission:
    rows = []
    for r in message["rows"]:
        sink = _Sink(int(r["id"]), outbox, sinks)
        sinks[sink.rid] = sink
        ids = [int(i) for i in r["ids"]]
        params = params_from_json(r["params"])
        deadline = float(r["deadline"])
        rows.append(Row(input_ids=ids, params=params, deadline=deadline, sink=sink, stream=bool(r["stream"])))
    fault = FaultPlan(**message["fault"]) if message.get("fault") else None
    submission = Submission(rows=rows, fault=fault)
    _report_submission(outbox, int(message["id"]), submission)
    return submission


def _send_memory(channel: Channel, device: Any, stop: threading.Event) -> None:
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    while not stop.wait(_MEMORY_EVERY_S):
        try:
            channel.send(
                {
                    "t": "memory",
                    "device": f"cuda:{index}",
                    "allocated": torch.cuda.memory_allocated(index),
                    "reserved": torch.cuda.memory_reserved(index),
                }
            )
        except ChannelClosed:
            return


def serve(channel: Channel) -> int:
    config = channel.recv()
    configure_logging(str(config.get("log_level", "info")))
    route_stderr_to_log()  # torch's and transformers' warnings: JSON lines like every other
    from gateway.runners.transformers_runner import TransformersRunner  # torch: only in this process

    try:
        runner = TransformersRunner(config_from_json(config))
    except Exception as exc:
        log.exception("model process: load failed", extra={"model": config.get("model_id")})
        channel.send({"t": "failed", "error": repr(exc)[:500]})
        return 1
    freeze_startup_heap()  # torch, transformers and the model: no full collection walks them while decoding
    runner.start()
    info = runner.info
    channel.send({"t": "ready", "info": {"device": info.device, "dtype": info.dtype}, "continuous": runner.continuous})
    outbox = _Outbox(channel)
    runner.after_pass = outbox.flush
    sinks: dict[int, _Sink] = {}
    stop_memory = threading.Event()
    if runner.device.type == "cuda":
        threading.Thread(
            target=_send_memory, args=(channel, runner.device, stop_memory), name="gateway-memory", daemon=True
        ).start()
    try:
        while True:
            try:
                message = channel.recv()
            except ChannelClosed:
                break
            kind = message.get("t")
            if kind == "submit":
                runner.enqueue(_submission(message, outbox, sinks))
            elif kind == "cancel":
                for rid in message["ids"]:
                    target = sinks.get(int(rid))
                    if target is not None:
                        target.cancel = True
            elif kind == "wake":
                runner.faults.clear()  # ends an injected stall now
            elif kind == "stop":
                break
    finally:
        stop_memory.set()
        runner.faults.clear()
        runner.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="this process's end of the socket pair")
    args = parser.parse_args(argv)
    # The gateway drains on SIGTERM and forwards nothing: a terminal's Ctrl-C must not kill the model first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = Channel(socket.socket(fileno=args.fd))
    try:
        return serve(channel)
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
