"""Replicas behind a real balancer: two ``gateway serve`` processes on loopback behind HAProxy, under steady load.

HAProxy (Debian's package) health-checks each replica's ``/ready`` and retries a request on another replica when
its replica gave no answer at all (connection refused or closed before a byte: ``conn-failure``,
``empty-response``, ``junk-response``), refused it without running it (503: draining or breaker open) or had its
model fail it (500, never sent for bad input). The load is a few clients sending ``/generate`` through HAProxy for
the whole test, while the test, one phase after the other:

1. opens one replica's circuit breaker with the contract's error fault (the failing requests are sent to the
   replica directly): HAProxy takes it out of rotation and puts it back once the breaker is half-open, and the
   replica serves traffic again;
2. restarts both replicas one at a time with SIGTERM (each drains and exits 0, then starts again on its port);
3. kills one replica's whole process group with SIGKILL while requests are held on it by the stall fault:
   HAProxy gets no answer byte for those and retries them elsewhere.

Each phase asserts that no client request failed and prints its figures (sent, answered, lost, retried), read from
the clients and from HAProxy's stats socket. Needs ``haproxy`` on PATH (``make system-deps``): skipped without
it, failed without it when ``CI`` is set. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bench.gateway_process import ServerProcess, gateway_env
from tests.conftest import free_port
from tests.serving_helpers import GEN, parse_metrics, sample

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPLICAS = 2
CLIENTS = 3
BACKEND = "gateways"
BREAKER_THRESHOLD = 2
BREAKER_RECOVERY_S = 3.0
REPLICA_SETTINGS = {
    "GATEWAY_ENABLE_FAULTS": "true",
    "GATEWAY_BREAKER_FAILURE_THRESHOLD": str(BREAKER_THRESHOLD),
    "GATEWAY_BREAKER_RECOVERY_S": str(BREAKER_RECOVERY_S),
    "GATEWAY_DRAIN_TIMEOUT_S": "10",
    # One model per replica (translation through the generation model): the balancer, not translation, is tested.
    "GATEWAY_TRANSLATION_MODEL": "same",
}

HAPROXY_CONFIG = """
global
    stats socket {socket} mode 600 level admin
    log stdout format raw local0

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    # L7 retries need the whole request at hand.
    option http-buffer-request
    retries 3
    # Every retry goes to another replica, not back to the one that failed.
    option redispatch 1
    # No answer byte (refused, closed, garbage), refused unrun (503: draining, breaker open), or the model failed
    # (500: never for bad input). Never a 504 or a request whose answer had begun.
    retry-on conn-failure empty-response junk-response 500 503

frontend gateway
    bind 127.0.0.1:{port}
    default_backend {backend}

backend {backend}
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter 200ms fall 1 rise 2
{servers}
"""


def _haproxy() -> str:
    path = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.path.exists(p)), None)
    if path is None:
        message = "haproxy not found (apt-get install haproxy, or make system-deps)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    until = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < until, f"timed out waiting for {what}"
        time.sleep(0.1)


class Replica:
    """One ``gateway serve`` on a fixed port, started again on the same port after a stop or a kill: each start a
    ``ServerProcess`` (the harness the other end-to-end tests and the bench use) in a process group of its own, its
    model processes included, with a log file of its own."""

    def __init__(self, name: str, port: int, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = env
        self.logs = logs
        self.starts = 0
        self.start()

    def start(self) -> None:
        self.starts += 1
        log = self.logs / f"{self.name}-{self.starts}.log"
        self.server = ServerProcess(
            [sys.executable, "-m", "gateway", "serve"], self.env, self.port, log=log, own_group=True
        )

    def wait_ready(self) -> None:
        self.server.wait_ready(120)

    def terminate(self) -> int:
        """SIGTERM to the gateway's own process only (as a container runtime sends it); its exit code."""
        self.server.proc.send_signal(signal.SIGTERM)
        return self.server.proc.wait(30)

    def get(self, path: str) -> httpx.Response | None:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(self.url + path, timeout=2)
        return None

    def in_flight(self) -> float:
        response = self.get("/metrics")
        return sample(parse_metrics(response.text), "gateway_requests_in_flight", model=GEN) if response else 0.0

    def breaker(self) -> str | None:
        response = self.get("/ready")
        return None if response is None else str(response.json()["components"][GEN]["circuit_breaker"])

    def kill_group(self) -> None:
        """SIGKILL to the whole process group, then wait until it is gone."""
        self.server.stop()


class HAProxy:
    def __init__(self, binary: str, workdir: Path, replicas: list[Replica]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.socket_path = workdir / "haproxy.sock"
        servers = "\n".join(f"    server {r.name} 127.0.0.1:{r.port} check" for r in replicas)
        config = workdir / "haproxy.cfg"
        config.write_text(
            HAPROXY_CONFIG.format(socket=self.socket_path, port=self.port, backend=BACKEND, servers=servers)
        )
        check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log_path = workdir / "haproxy.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self.socket_path.exists, "haproxy's stats socket", 10)

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the backend: one row per server and one named BACKEND, by ``svname``."""
        text = self.command("show stat").lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(io.StringIO(text)) if row["pxname"] == BACKEND}

    def status(self, server: str) -> str:
        return self.stats()[server]["status"]

    def retried(self) -> int:
        backend = self.stats()["BACKEND"]
        return int(backend["wretr"] or 0) + int(backend["wredis"] or 0)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@dataclass
class Load:
    """A few clients posting ``/generate`` through the balancer until stopped; every outcome is recorded."""

    url: str
    clients: int = CLIENTS
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _client(self, index: int) -> None:
        body = {"inputs": f"client {index}", "parameters": {"max_new_tokens": 4}}
        with httpx.Client(base_url=self.url, timeout=45) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/generate", json=body)
                    outcome = str(response.status_code)
                    detail = response.text[:200]
                except httpx.HTTPError as exc:
                    outcome, detail = type(exc).__name__, str(exc)
                with self._lock:
                    self.outcomes[outcome] += 1
                    if outcome != "200":
                        self.failures.append(f"{outcome}: {detail}")
                time.sleep(0.1)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.outcomes)


@dataclass
class Phase:
    name: str
    balancer: HAProxy
    load: Load
    before: Counter[str] = field(default_factory=Counter)
    retried_before: int = 0
    t0: float = 0.0

    def __enter__(self) -> Phase:
        self.t0 = time.monotonic()
        self.before = self.load.snapshot()
        self.retried_before = self.balancer.retried()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def figures(self) -> dict[str, int]:
        outcomes = self.load.snapshot() - self.before
        sent = sum(outcomes.values())
        answered = outcomes["200"]
        figures = {
            "sent": sent,
            "answered": answered,
            "lost": sent - answered,
            "retried": self.balancer.retried() - self.retried_before,
        }
        counts = ", ".join(f"{k} {v}" for k, v in figures.items())
        print(f"\n[haproxy {self.name}] {counts} ({time.monotonic() - self.t0:.1f} s)")
        return figures


@pytest.fixture
def cluster(demo_cache_dir: Path, tmp_path: Path) -> Iterator[tuple[list[Replica], HAProxy, Load]]:
    binary = _haproxy()
    replicas = []
    for i in range(REPLICAS):
        port = free_port()
        replicas.append(Replica(f"r{i}", port, gateway_env(port, demo_cache_dir) | REPLICA_SETTINGS, tmp_path))
    balancer: HAProxy | None = None
    load: Load | None = None
    try:
        for replica in replicas:
            replica.wait_ready()
        balancer = HAProxy(binary, tmp_path, replicas)
        wait_for(lambda: all(balancer.status(r.name) == "UP" for r in replicas), "every replica UP in haproxy")
        load = Load(balancer.url)
        load.start()
        yield replicas, balancer, load
    finally:
        if load is not None:
            load.stop()
        if balancer is not None:
            balancer.stop()
        for replica in replicas:
            replica.kill_group()


def test_replicas_behind_haproxy_lose_nothing(cluster: tuple[list[Replica], HAProxy, Load]) -> None:
    replicas, balancer, load = cluster
    wait_for(lambda: load.snapshot()["200"] >= 20, "the load to flow")

    # 1. A replica whose breaker opens leaves the rotation and comes back.
    with Phase("breaker open", balancer, load) as phase:
        target = replicas[0]
        downs = int(balancer.stats()[target.name]["chkdown"])
        assert httpx.post(target.url + "/admin/faults", json={"kind": "error", "count": BREAKER_THRESHOLD}).is_success
        # Failing requests sent to the replica itself (the balancer's may take some of the failures too).
        until = time.monotonic() + 20
        while target.breaker() != "open":
            assert time.monotonic() < until, "the breaker did not open"
            httpx.post(target.url + "/generate", json={"inputs": "direct", "parameters": {"max_new_tokens": 2}})
        wait_for(lambda: balancer.status(target.name).startswith("DOWN"), "the open replica to leave the rotation", 10)
        served = int(balancer.stats()[target.name]["stot"])
        wait_for(lambda: balancer.status(target.name) == "UP", "the replica to come back", BREAKER_RECOVERY_S + 15)
        wait_for(lambda: target.breaker() == "closed", "the breaker to close on the balancer's traffic", 15)
        wait_for(lambda: int(balancer.stats()[target.name]["stot"]) > served + 5, "traffic on the replica again", 15)
        assert int(balancer.stats()[target.name]["chkdown"]) > downs
        figures = phase.figures()
    assert figures["lost"] == 0, load.failures
    assert figures["answered"] > 0

    # 2. Rolling restart: SIGTERM one replica at a time; it drains, exits 0 and starts again.
    with Phase("rolling restart", balancer, load) as phase:
        for replica in replicas:
            assert replica.terminate() == 0, replica.server.read_output()[-2000:]
            replica.kill_group()  # anything its drain left behind (nothing, normally), and its log closed
            wait_for(lambda r=replica: balancer.status(r.name).startswith("DOWN"), f"{replica.name} DOWN", 10)
            started = time.monotonic()
            replica.start()
            replica.wait_ready()
            print(f"[haproxy rolling restart] {replica.name} ready {time.monotonic() - started:.1f} s after its start")
            wait_for(lambda r=replica: balancer.status(r.name) == "UP", f"{replica.name} UP again", 10)
        figures = phase.figures()
    assert figures["lost"] == 0, load.failures
    assert figures["answered"] > 0

    # 3. SIGKILL a replica (its whole process group, as a container kill) while requests are held on it.
    with Phase("sigkill", balancer, load) as phase:
        victim = replicas[1]
        assert httpx.post(victim.url + "/admin/faults", json={"kind": "stall", "count": 1, "seconds": 60}).is_success
        wait_for(lambda: victim.in_flight() >= 2, "requests held on the replica", 15)
        held = int(victim.in_flight())
        victim.kill_group()
        wait_for(lambda: balancer.status(victim.name).startswith("DOWN"), "the killed replica DOWN", 10)
        answered_at_kill = load.snapshot()["200"]
        wait_for(lambda: load.snapshot()["200"] > answered_at_kill + 20, "the load to go on", 30)
        victim.start()
        victim.wait_ready()
        wait_for(lambda: balancer.status(victim.name) == "UP", "the replica UP again", 10)
        figures = phase.figures()
        print(f"[haproxy sigkill] requests held on the killed replica: {held}")
    # Only the requests in flight on the killed replica were at risk, and none had an answer byte yet (a
    # /generate answer is sent whole): HAProxy retried each of them on the other replica.
    assert figures["lost"] == 0, load.failures
    assert figures["retried"] >= held

    load.stop()
    total = load.snapshot()
    print(f"[haproxy total] sent {sum(total.values())}, answered {total['200']}, outcomes {dict(total)}")
