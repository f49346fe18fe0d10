"""Limits that hold while a request's bytes arrive, on a real ``gateway serve`` over raw sockets.

A head over the cap is refused while it is still arriving (the answer comes before the client has sent it all),
and so is a request target over its cap; a head or a body that stops arriving is answered 408 and its connection
closed; an idle new connection is closed; a request on one connection too many gets 503. The gateway's CPU time
and the worst ``/health`` latency meanwhile are printed (``-s``) for the record, never asserted.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.gateway_process import ServerProcess, running, start_gateway
from tests.raw_http import Exchange, Poller, exchange, repeated

MB = 1 << 20
SETTINGS = {"header_timeout_s": 1.5, "body_timeout_s": 1.5, "model_process": "false"}


@pytest.fixture(scope="module")
def server(demo_cache_dir: Path) -> Iterator[ServerProcess]:
    with running(start_gateway(demo_cache_dir, SETTINGS)) as srv:
        yield srv


def _attack(server: ServerProcess, chunks: Iterator[bytes]) -> tuple[Exchange, Poller, float]:
    cpu = server.cpu_s()
    with Poller(server.port) as poller:
        time.sleep(0.1)
        answer = exchange(server.port, chunks)
        time.sleep(0.1)
    cpu = server.cpu_s() - cpu
    print(
        f"\n  answer {answer.status} after {answer.answer_s}s, {answer.sent / MB:.1f} MB sent; gateway CPU {cpu:.3f}s;"
        f" /health worst {poller.worst_s * 1000:.0f} ms over {len(poller.latencies)} probes"
    )
    return answer, poller, cpu


def _refused_early(answer: Exchange, status: int, error_type: str) -> None:
    assert answer.status == status, answer.raw[:300]
    assert answer.json()["error_type"] == error_type
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["connection"] == "close"
    assert answer.closed
    # Refused while arriving: the answer came before the client could send the rest.
    assert not answer.complete


def test_a_96_mb_header_is_refused_with_431_while_it_arrives(server: ServerProcess) -> None:
    head = repeated(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a", 96 * MB, b"\r\n\r\n")
    answer, poller, _ = _attack(server, head)
    _refused_early(answer, 431, "headers_too_large")
    assert answer.sent < 96 * MB
    assert poller.statuses and set(poller.statuses) == {200}


def test_many_headers_over_the_cap_are_refused_with_431(server: ServerProcess) -> None:
    head = repeated(b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X-Many: 1\r\n", 4 * MB, b"\r\n")
    answer = exchange(server.port, head)
    _refused_early(answer, 431, "headers_too_large")


def test_a_64_mb_query_string_is_refused_with_414_while_it_arrives(server: ServerProcess) -> None:
    answer, poller, _ = _attack(server, repeated(b"GET /health?q=", b"a", 64 * MB, b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    _refused_early(answer, 414, "uri_too_long")
    assert set(poller.statuses) == {200}


def test_a_target_just_over_the_cap_is_414_and_just_under_is_answered(server: ServerProcess) -> None:
    over = exchange(server.port, [b"GET /health?q=" + b"a" * 8200 + b" HTTP/1.1\r\nHost: x\r\n\r\n"], hold_s=5)
    assert over.status == 414 and over.closed
    under = b"GET /health?q=" + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert exchange(server.port, [under], hold_s=5).status == 200


def test_a_head_sent_a_line_at_a_time_gets_408_and_is_closed(server: ServerProcess) -> None:
    lines = [b"GET /health HTTP/1.1\r\nHost: x\r\n", *([b"X-Slow: 1\r\n"] * 100), b"\r\n"]
    answer = exchange(server.port, lines, pause_s=0.1)
    _refused_early(answer, 408, "request_timeout")
    assert answer.answer_s is not None and answer.answer_s < 10  # the lines would have taken 10 s


def test_an_idle_new_connection_is_closed(server: ServerProcess) -> None:
    answer = exchange(server.port, [], hold_s=0, timeout_s=20)
    assert answer.closed and answer.raw == b""


def test_a_body_that_stops_midway_gets_408_and_the_connection_is_freed(server: ServerProcess) -> None:
    head = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    answer = exchange(server.port, [head + b'{"inputs": "stops here'], hold_s=20)
    assert answer.status == 408, answer.raw[:300]
    assert answer.json()["error_type"] == "request_timeout"
    assert answer.headers["connection"] == "close" and answer.headers.get("x-request-id")
    assert answer.closed


def test_an_early_answer_closes_the_connection_rather_than_read_the_body(server: ServerProcess) -> None:
    head = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
    answer = exchange(server.port, repeated(head, b"a", 50 * MB, b""))
    assert answer.status == 413
    assert answer.closed and not answer.complete


def test_a_request_beyond_the_connection_cap_gets_503(demo_cache_dir: Path) -> None:
    settings = {"max_connections": 3, "header_timeout_s": 30, "model_process": "false"}
    with running(start_gateway(demo_cache_dir, settings)) as srv:
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(3)]
        try:
            time.sleep(0.3)
            answer = exchange(srv.port, [b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"], hold_s=5)
            assert answer.status == 503, answer.raw[:300]
            assert answer.json()["error_type"] == "too_many_connections"
            assert answer.headers["retry-after"] == "1" and answer.closed
        finally:
            for sock in idle:
                sock.close()
        request = [b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
        until = time.monotonic() + 10
        while (status := exchange(srv.port, request, hold_s=5).status) != 200 and time.monotonic() < until:
            time.sleep(0.1)
        assert status == 200
