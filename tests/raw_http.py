"""HTTP/1.1 over a raw socket, for requests no HTTP client would send: a head of 96 MB, a head sent a line at a
time, a body that stops mid-way. The answer is read on a thread while the request is still being sent, so a
server that answers early is seen answering early; sending stops once it has answered or closed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

LOOPBACK = "127.0.0.1"


@dataclass
class Exchange:
    """What happened on one connection."""

    raw: bytes = b""
    sent: int = 0  # bytes of the request the client got to send
    complete: bool = False  # every byte of the request was sent
    closed: bool = False  # the server closed the connection (EOF or reset)
    answer_s: float | None = None  # seconds from the first byte sent to the first byte of the answer
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> int | None:
        if not self.raw.startswith(b"HTTP/1."):
            return None
        return int(self.raw.split(b" ", 2)[1])

    def json(self) -> Any:
        return json.loads(self.raw.split(b"\r\n\r\n", 1)[1])


def _parse_headers(raw: bytes) -> dict[str, str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head if ":" in line)}


def exchange(
    port: int, chunks: Iterable[bytes], *, pause_s: float = 0.0, hold_s: float = 0.0, timeout_s: float = 30.0
) -> Exchange:
    """Send ``chunks`` (``pause_s`` between them) while reading the answer; after the last chunk wait up to
    ``hold_s`` for the server to answer, then up to ``timeout_s`` in all for it to close the connection."""
    result = Exchange()
    answered = threading.Event()
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout_s)
    started = time.monotonic()

    def read() -> None:
        try:
            while chunk := sock.recv(1 << 16):
                if result.answer_s is None:
                    result.answer_s = time.monotonic() - started
                result.raw += chunk
                answered.set()
            result.closed = True
        except (ConnectionResetError, BrokenPipeError):
            result.closed = True
        except OSError:  # the client's own timeout: the server kept the connection open
            pass
        finally:
            answered.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for chunk in chunks:
            if answered.is_set():
                break
            sock.sendall(chunk)
            result.sent += len(chunk)
            if pause_s:
                time.sleep(pause_s)
        else:
            result.complete = True
            answered.wait(hold_s)
    except OSError:  # the server closed while the request was being sent
        pass
    reader.join(timeout_s)
    with contextlib.suppress(OSError):
        sock.close()
    result.headers = _parse_headers(result.raw)
    return result


def repeated(prefix: bytes, filler: bytes, size: int, suffix: bytes, chunk: int = 1 << 16) -> Iterator[bytes]:
    """``prefix``, then ``size`` bytes of ``filler`` in chunks of ``chunk``, then ``suffix``."""
    yield prefix
    block = (filler * (chunk // len(filler) + 1))[:chunk]
    left = size
    while left > 0:
        yield block[: min(chunk, left)]
        left -= chunk
    yield suffix


class Poller:
    """GET ``url`` in a loop on a thread (a fresh connection each time); the latency of each answer."""

    def __init__(self, port: int, path: str = "/health") -> None:
        self.port = port
        self.path = path
        self.latencies: list[float] = []
        self.statuses: list[int | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        request = f"GET {self.path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        while not self._stop.is_set():
            started = time.monotonic()
            answer = exchange(self.port, [request], hold_s=10.0, timeout_s=10.0)
            self.latencies.append(time.monotonic() - started)
            self.statuses.append(answer.status)
            self._stop.wait(0.02)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    @property
    def worst_s(self) -> float:
        return max(self.latencies, default=0.0)
