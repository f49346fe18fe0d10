"""The gateway side of a model process (``model_process``): same seam as ``TransformersRunner``, no torch here.

Tokenizing stays in this process (``ModelFiles``); each submission goes to the model process as one JSON
message, sent without waiting on the socket (``wire.Sender``: what it cannot take yet goes out from a thread),
and a reader thread turns the events coming back into the rows' ``RowSink`` calls and the submissions' futures.
Cancellation is forwarded as the events arrive: a row whose client left is named in a ``cancel`` message and
stops within a step.

The process is restarted when it dies (its rows fail with ``ModelError``) and on ``reset`` (the watchdog: it is
killed, its rows fail with the reason given). Until a new one has loaded, ``alive`` is false and submissions
wait in the sender and the socket.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from gateway.errors import GatewayError, ModelError
from gateway.runners.base import Row, RunnerConfig, Submission
from gateway.runners.faults import FaultInjector
from gateway.runners.model_files import ModelFiles
from gateway.runners.wire import (
    Channel,
    ChannelClosed,
    Sender,
    config_to_json,
    error_from_json,
    output_from_json,
    params_to_json,
    token_from_json,
)

log = logging.getLogger("gateway.model_process")


class _Child:
    """One model process and the rows and submissions it holds."""

    def __init__(self, config: dict[str, Any], on_lost: Callable[[_Child], None]) -> None:
        self.on_lost = on_lost  # told (on the reader thread) once this process is gone and its rows failed
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.runners.model_process", "--fd", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.channel = Channel(ours)
        self.rows: dict[int, Row] = {}
        self.submissions: dict[int, Submission] = {}
        self.cancel_sent: set[int] = set()
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.device = self.dtype = ""
        self.continuous = False
        self.error: str | None = None
        self.lost = False
        self.reset_requested = False  # killed on purpose (the watchdog), not dead on its own
        self.loss_reason: GatewayError = ModelError("the model process exited")
        self.memory: dict[str, Any] | None = None
        self.channel.send(config)
        self.sender = Sender(self.channel, f"gateway-sender-{self.proc.pid}")  # every later message
        self.reader = threading.Thread(target=self._read, name=f"gateway-reader-{self.proc.pid}", daemon=True)
        self.reader.start()

    @property
    def alive(self) -> bool:
        return self.ready.is_set() and self.error is None and not self.lost and self.proc.poll() is None

    def submit(self, rid_counter: itertools.count[int], submission: Submission) -> None:
        rows = []
        with self.lock:
            if self.lost:
                raise ChannelClosed("model process gone")
            sid = next(rid_counter)
            self.submissions[sid] = submission
            for row in submission.rows:
                rid = next(rid_counter)
                self.rows[rid] = row
                params = params_to_json(row.params)
                rows.append(
                    {"id": rid, "ids": row.input_ids, "params": params, "deadline": row.deadline, "stream": row.stream}
                )
        fault = submission.fault
        wire_fault = None if fault is None else {"kind": fault.kind, "seconds": fault.seconds, "output": fault.output}
        self.sender.send({"t": "submit", "id": sid, "rows": rows, "fault": wire_fault})

    def _read(self) -> None:
        try:
            first = self.channel.recv()
            if first.get("t") != "ready":
                self.error = str(first.get("error", "the model process failed to start"))
                return
            self.device = str(first["info"]["device"])
            self.dtype = str(first["info"]["dtype"])
            self.continuous = bool(first["continuous"])
            self.ready.set()
            while True:
                message = self.channel.recv()
                if message.get("t") == "events":
                    self._handle(message["e"])
                    self._forward_cancels()
                elif message.get("t") == "memory":
                    self.memory = message
        except ChannelClosed:
            pass
        except Exception:  # a bug here must not leave rows waiting: they fail below
            log.exception("model process reader failed")
        finally:
            self._lose()

    def _handle(self, events: list[list[Any]]) -> None:
        for event in events:
            kind = event[0]
            if kind == "t":
                row = self.rows.get(event[1])
                if row is not None:
                    row.emitted_tokens += 1
                    row.sink.on_token(token_from_json(event[2]))
            elif kind == "d":
                with self.lock:
                    row = self.rows.pop(event[1], None)
                    self.cancel_sent.discard(event[1])
                if row is not None:
                    row.done = True
                    row.sink.on_done(output_from_json(event[2]) if event[3] is None else error_from_json(event[3]))
            elif kind == "a":
                submission = self.submissions.get(event[1])
                if submission is not None:
                    submission.admit(bool(event[2]))
            elif kind == "s":
                with self.lock:
                    submission = self.submissions.pop(event[1], None)
                if submission is not None:
                    if event[3] is None:
                        submission.finish(int(event[2]))
                    else:
                        submission.fail(error_from_json(event[3]))

    def _forward_cancels(self) -> None:
        with self.lock:
            gone = [rid for rid, row in self.rows.items() if rid not in self.cancel_sent and row.sink.cancelled()]
            self.cancel_sent.update(gone)
        if gone:
            self.sender.send({"t": "cancel", "ids": gone})

    def _lose(self) -> None:
        with self.lock:
            self.lost = True
            submissions = list(self.submissions.values())
            self.submissions.clear()
            self.rows.clear()
        self.ready.set()
        for submission in submissions:
            submission.fail(self.loss_reason)
        self.sender.close()
        self.channel.close()
        self.on_lost(self)

    def stop(self, timeout_s: float) -> None:
        try:
            self.sender.send({"t": "stop"})
            self.proc.wait(timeout=timeout_s)
        except (ChannelClosed, subprocess.TimeoutExpired):
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class ProcessRunner(ModelFiles):
    """A model served by a process of its own (see the module docstring)."""

    def __init__(
        self,
        config: RunnerConfig,
        faults: FaultInjector | None = None,
        *,
        on_crash_restart: Callable[[], None] | None = None,
        load_timeout_s: float = 1800.0,
    ) -> None:
        """``on_crash_restart`` is told (on the reader thread) once a model process that died on its own has been
        replaced; the watchdog's resets are counted by the scheduler that asked for them."""
        super().__init__(config)
        self.faults = faults or FaultInjector()
        self.faults.on_change.append(self._wake_stalls)
        is_demo = config.is_demo
        self.is_demo = is_demo
        self._config = config_to_json(config)
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._closing = False
        self.restarts = 0
        self.on_crash_restart = on_crash_restart
        self._child = _Child(self._config, self._replace)
        if not self._child.ready.wait(load_timeout_s) or not self._child.alive:
            error = self._child.error or "the model process did not start"
            self._closing = True
            self._child.kill()
            raise RuntimeError(error)
        child = self._child
        self.info = self.model_info(
            device=child.device, dtype=child.dtype, is_demo=is_demo, continuous_batching=child.continuous
        )

    @property
    def pid(self) -> int:
        return self._child.proc.pid

    @property
    def alive(self) -> bool:
        return self._child.alive

    @property
    def cuda_memory(self) -> dict[str, Any] | None:
        """The model process's last torch CUDA allocator report (None off a GPU)."""
        return self._child.memory

    def start(self) -> None:
        """The process runs from construction on."""

    def submit(self, rows: Sequence[Row]) -> Submission:
        submission = Submission(rows=list(rows), fault=self.faults.take())
        try:
            self._child.submit(self._ids, submission)
        except ChannelClosed:
            submission.fail(ModelError("the model process is restarting"))
        return submission

    def reset(self, reason: GatewayError) -> None:
        """Kill the model process (stuck); its rows fail with ``reason``; a new one starts."""
        child = self._child
        child.loss_reason = reason
        child.reset_requested = True
        child.kill()  # the reader sees the end of the stream, fails the rows and starts the next process

    def _replace(self, child: _Child) -> None:
        with self._lock:
            if self._closing or child is not self._child:
                return
            code = child.proc.wait()
            log.error(
                "model process exited; starting a new one",
                extra={"model": self.model_id, "exit_code": code, "error_type": child.loss_reason.error_type},
            )
            self.restarts += 1
            self._child = _Child(self._config, self._replace)
        if not child.reset_requested and self.on_crash_restart is not None:
            self.on_crash_restart()

    def _wake_stalls(self) -> None:
        with contextlib.suppress(ChannelClosed):
            self._child.sender.send({"t": "wake"})

    def close(self) -> None:
        with self._lock:
            self._closing = True
            child = self._child
        child.stop(timeout_s=10.0)
        child.reader.join(timeout=5.0)
