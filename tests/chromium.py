"""Headless Chromium (Debian's ``chromium``) for page tests: the DOM after the page's scripts ran, and a screenshot.

Skipped without the binary, failed without it when ``CI`` is set (``make system-deps`` installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium missing (apt-get install chromium)")
    pytest.skip("chromium missing")


def _run(url: str, *extra: str, budget_ms: int = 4000) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        args = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *extra, url]
        return subprocess.run(args, capture_output=True, text=True, timeout=90, check=False)


def dump_dom(url: str, budget_ms: int = 4000) -> str:
    """The serialized DOM once the page's scripts ran for ``budget_ms`` of virtual time."""
    result = _run(url, "--dump-dom", budget_ms=budget_ms)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(url: str, path: Path, size: str = "1280,1400", budget_ms: int = 4000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    result = _run(url, f"--screenshot={path}", f"--window-size={size}", budget_ms=budget_ms)
    assert result.returncode == 0 and path.is_file() and path.stat().st_size > 1000, result.stderr[-2000:]
    print(f"status page screenshot: {path}")
    return path
