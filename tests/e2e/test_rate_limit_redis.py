"""Two ``gateway serve`` processes sharing one real ``redis-server`` (Debian's package) for their rate limits: the
key's limit holds across both; with Redis stopped mid-test each one does what its setting says (one allows, one
refuses with 503) and counts it; once Redis is back, both recover.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from bench.gateway_process import ServerProcess
from tests.conftest import free_port
from tests.serving_helpers import parse_metrics, sample

KEY = "shared-secret-key"
RPM = 4


class RedisServer:
    """``redis-server`` on a loopback port, with nothing persisted; stopped and started again on the same port."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is missing: `make system-deps` installs it (Debian's redis-server)"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*argv, "--dir", str(self.workdir)], stdout=subprocess.DEVNULL)
        until = time.monotonic() + 10
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > until:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


def generate(server: ServerProcess) -> httpx.Response:
    body = {"inputs": "hi", "parameters": {"max_new_tokens": 2}}
    return httpx.post(server.url + "/generate", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)


def storage_errors(server: ServerProcess) -> float:
    r = httpx.get(server.url + "/metrics", headers={"X-API-Key": KEY}, timeout=10)
    assert r.status_code == 200
    return sample(parse_metrics(r.text), "gateway_rate_limit_storage_errors_total")


def test_replicas_share_the_limit_and_survive_redis_going_away(
    gateway_server: Callable[..., ServerProcess], redis_server: RedisServer, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        json.dumps([{"name": "shared", "sha256": hashlib.sha256(KEY.encode()).hexdigest(), "requests_per_minute": RPM}])
    )
    storage = f"redis://127.0.0.1:{redis_server.port}/0"
    common = {"api_keys_file": keys, "rate_limit_storage": storage, "model_process": "false"}
    allow = gateway_server(**common, rate_limit_on_storage_error="allow")
    deny = gateway_server(**common, rate_limit_on_storage_error="deny")

    # One window across both: RPM requests in all, whichever replica takes them.
    assert [generate(s).status_code for s in (allow, deny) * (RPM // 2)] == [200] * RPM
    for server in (allow, deny):
        refused = generate(server)
        assert refused.status_code == 429 and refused.json()["error_type"] == "rate_limited", refused.text
        assert refused.headers["ratelimit-limit"] == str(RPM)

    redis_server.stop()
    # Allowed without a count (the key is over its limit, and still served), refused with 503 by the other.
    assert [generate(allow).status_code for _ in range(3)] == [200] * 3
    for _ in range(2):
        r = generate(deny)
        assert r.status_code == 503 and r.json()["error_type"] == "rate_limit_unavailable", r.text
        assert r.headers["retry-after"] == "5"
    assert storage_errors(allow) == 3 and storage_errors(deny) == 2

    redis_server.start()  # empty again: nothing was persisted
    for server in (allow, deny):
        assert generate(server).status_code == 200
    assert storage_errors(allow) == 3 and storage_errors(deny) == 2  # counting again, no more errors
    assert [generate(s).status_code for s in (allow, deny) * (RPM // 2 - 1)] == [200] * (RPM - 2)
    assert [generate(s).status_code for s in (allow, deny)] == [429, 429]  # shared and limited again

    for server in (allow, deny):
        server.stop()
        output = server.read_output()
        assert output.count("rate-limit storage unreachable") == 1, output[-2000:]
        assert "rate-limit storage reachable again" in output
        assert KEY not in output
