"""Integration tier: the real app (``create_app``) on the real demo models, over httpx's ASGI transport.

``app_client`` runs the app's lifespan (models loaded, decode loops started) and hands back a client once the
app is ready; each app gets a fresh Prometheus registry. ``make_settings`` builds the ``Settings`` it uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.logs import ACCESS_LOGGER, json_formatter
from gateway.settings import Settings


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
def access_log() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The access log as the real JSON formatter writes it; call the fixture's value to parse what came so far."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(json_formatter())
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield lambda: [json.loads(line) for line in lines]
    logger.removeHandler(handler)
    logger.setLevel(old)
