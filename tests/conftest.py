"""Shared fixtures: the real app on the real demo models, over httpx (ASGI) or a real uvicorn on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from bench.gateway_process import ServerProcess, start_gateway
from bench.gateway_process import free_port as free_port  # re-exported: tests import it from here
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


@pytest.fixture
def gateway_server(demo_cache_dir: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: start ``gateway serve`` (the harness shared with the bench) with extra settings by name, each
    becoming its ``GATEWAY_*`` variable; ready when returned, killed at teardown."""
    started: list[ServerProcess] = []

    def start(**settings: Any) -> ServerProcess:
        server = start_gateway(demo_cache_dir, settings)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
