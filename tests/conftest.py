"""Fixtures shared by the tiers: the demo models, free loopback ports, ``gateway serve`` as a real process.

Tier-specific fixtures live in each tier's conftest (``tests/integration/conftest.py``: the app over ASGI).
Nothing here imports torch: the unit tier loads this file too, with torch made unimportable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.gateway_process import ServerProcess, start_gateway
from bench.gateway_process import free_port as free_port  # re-exported: tests import it from here
from gateway.demo import ensure_demo_models

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_cache_dir() -> Path:
    """The demo models, built once per machine (the same cache `gateway serve` uses)."""
    path = Path(os.environ.get("GATEWAY_DEMO_CACHE_DIR", ROOT / ".pytest_cache" / "demo-models"))
    ensure_demo_models(path)
    return path


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
