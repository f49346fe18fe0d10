"""End-to-end tier: real processes on loopback (``gateway serve``, Prometheus, Alertmanager) and real clients.

Every test here is marked ``e2e`` (``-m "not e2e"`` leaves the tier out of a run that collects it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)
