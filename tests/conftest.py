"""Fixtures shared by the tiers: the demo models, free loopback ports, ``gateway serve`` as a real process.

Tier-specific fixtures live in each tier's conftest (``tests/integration/conftest.py``: the app over ASGI).
Nothing here imports torch: the unit tier loads this file too, with torch made unimportable.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.demo import ensure_demo_models

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_cache_dir() -> Path:
    """The demo models, built once per machine (the same cache `gateway serve` uses)."""
    path = Path(os.environ.get("GATEWAY_DEMO_CACHE_DIR", ROOT / ".pytest_cache" / "demo-models"))
    ensure_demo_models(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``gateway serve`` as a real process on loopback, its stdout (JSON logs) collected."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        until = time.monotonic() + timeout_s
        while time.monotonic() < until:
            if self.proc.poll() is not None:
                raise AssertionError("gateway exited early:\n" + self.read_output())
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError("gateway not ready in time")

    def read_output(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stdout is not None
        return self.proc.stdout.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def gateway_server(demo_cache_dir: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: start ``gateway serve`` with extra ``GATEWAY_*`` settings; killed at teardown."""
    started: list[ServerProcess] = []

    def start(**settings: Any) -> ServerProcess:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(
            {
                "GATEWAY_PORT": str(port),
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_DEMO_CACHE_DIR": str(demo_cache_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update({f"GATEWAY_{k.upper()}": str(v) for k, v in settings.items()})
        server = ServerProcess(env, port)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
