"""SIGTERM drains: ``gateway serve`` runs as a real process on loopback; the test signals it while requests are
in flight (held by the contract's stall fault, then released) and checks every answer and the exit code."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import httpx

from tests.conftest import ServerProcess
from tests.serving_helpers import GEN, parse_metrics, sample, sse_events

StartServer = Callable[..., ServerProcess]


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    until = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < until, f"timed out waiting for {what}"
        time.sleep(0.02)


def in_flight(client: httpx.Client) -> int:
    return int(sample(parse_metrics(client.get("/metrics").text), "gateway_requests_in_flight", model=GEN))


def start_in_flight(server: ServerProcess, pool: ThreadPoolExecutor, n: int) -> list[Future[httpx.Response]]:
    """``n`` requests held by a stalled worker: one in the stalled batch, the others queued; one is a stream."""

    def post(path: str, prompt: str) -> httpx.Response:
        body = {"inputs": prompt, "parameters": {"max_new_tokens": 12, "details": True}}
        return httpx.post(server.url + path, json=body, timeout=60)

    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/admin/faults", json={"kind": "stall", "count": 1, "seconds": 60}).status_code == 200
        futures = [pool.submit(post, "/generate", "held")]
        wait_for(lambda: in_flight(client) == 1, "the held request")
        futures += [
            pool.submit(post, "/generate_stream" if i == 0 else "/generate", f"queued {i}") for i in range(n - 1)
        ]
        wait_for(lambda: in_flight(client) == n, f"{n} requests in flight")
    return futures


def test_sigterm_drains_in_flight_and_queued_work_then_exits_0(gateway_server: StartServer) -> None:
    server = gateway_server(enable_faults="true", drain_timeout_s=30)
    with ThreadPoolExecutor(4) as pool, httpx.Client(base_url=server.url, timeout=10) as client:
        futures = start_in_flight(server, pool, 4)
        server.proc.send_signal(signal.SIGTERM)

        # Draining: not ready, and new work is refused with 503, while the process keeps answering.
        wait_for(lambda: client.get("/ready").status_code == 503, "/ready to turn 503")
        ready = client.get("/ready")
        assert ready.json()["components"]["draining"] is True and ready.headers["retry-after"]
        refused = client.post("/generate", json={"inputs": "too late", "parameters": {"max_new_tokens": 2}})
        assert refused.status_code == 503 and refused.json()["error_type"] == "draining"
        assert refused.headers["retry-after"]
        assert client.get("/health").status_code == 200
        assert not any(f.done() for f in futures)  # still held

        # The work finishes within the grace period: every in-flight request gets its full answer.
        assert client.delete("/admin/faults").status_code == 200
        answers = [f.result(timeout=30) for f in futures]
    assert [r.status_code for r in answers] == [200] * 4
    plain = [r.json()["details"]["generated_tokens"] for r in answers if not r.text.startswith("data:")]
    assert plain == [12, 12, 12]
    streamed = [sse_events(r.text) for r in answers if r.text.startswith("data:")]
    assert len(streamed) == 1 and streamed[0][-1]["details"]["generated_tokens"] == 12

    assert server.proc.wait(timeout=30) == 0
    logs = [json.loads(line) for line in server.read_output().splitlines() if line.startswith("{")]
    assert any(line["message"] == "drain finished" for line in logs)
    # The gateway and both model processes froze their start-up heaps (a full collection would walk them).
    frozen = [line for line in logs if line["message"] == "startup heap frozen"]
    assert len(frozen) == 3 and all(line["objects"] > 50_000 for line in frozen), frozen


def test_work_left_when_the_grace_period_ends_is_answered_503(gateway_server: StartServer) -> None:
    server = gateway_server(enable_faults="true", drain_timeout_s=1)
    with ThreadPoolExecutor(2) as pool:
        futures = start_in_flight(server, pool, 2)
        server.proc.send_signal(signal.SIGTERM)
        answers = [f.result(timeout=30) for f in futures]  # the stall never ends by itself
    # The held request and the queued stream (no token yet, so a real status) both get a JSON 503, not a cut.
    assert [(r.status_code, r.json()["error_type"]) for r in answers] == [(503, "draining")] * 2
    assert all(r.headers["retry-after"] for r in answers)
    assert server.proc.wait(timeout=30) == 0
