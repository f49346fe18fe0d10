"""Shared fixtures: the real app on the real demo models, over httpx (ASGI) or a real uvicorn on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.demo import ensure_demo_models
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_cache_dir() -> Path:
    """The demo models, built once per machine (the same cache `gateway serve` uses)."""
    path = Path(os.environ.get("GATEWAY_DEMO_CACHE_DIR", ROOT / ".pytest_cache" / "demo-models"))
    ensure_demo_models(path)
    return path


class ManualClock:
    """A monotonic clock the test moves by hand (breaker recovery without sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def make_settings(demo_cache_dir: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        # In-process decode loop unless a test asks for the model process (same loop, seconds less per app).
        values: dict[str, Any] = {"demo_cache_dir": demo_cache_dir, "max_batch_wait_ms": 5.0, "model_process": False}
        values.update(overrides)
        return Settings(**values)

    return build


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = 60.0) -> None:
    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        if (await client.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the gateway did not become ready")


@pytest.fixture
def app_client(make_settings: Callable[..., Settings]) -> Callable[..., Any]:
    """Factory: ``async with app_client(**settings) as (client, app):`` a ready app with a fresh registry."""

    @contextlib.asynccontextmanager
    async def open_client(
        *, ready: bool = True, clock: Callable[[], float] | None = None, **overrides: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
        kwargs: dict[str, Any] = {"registry": CollectorRegistry()}
        if clock is not None:
            kwargs["clock"] = clock
        app = create_app(make_settings(**overrides), **kwargs)
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as client:
                if ready:
                    await wait_ready(client)
                yield client, app

    return open_client


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
