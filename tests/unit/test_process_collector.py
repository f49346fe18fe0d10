"""The model-process collector against real processes: /proc of a live child, a dead pid, odd command names."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metrics import ModelProcessCollector
from metrics.process_collector import read_process_stat

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

# Holds 64 MiB, runs 4 extra threads and burns some CPU, then waits for stdin to close.
CHILD = """
import sys, threading, time
ballast = bytearray(64 * 1024 * 1024)
for i in range(0, len(ballast), 4096):
    ballast[i] = 1
stop = threading.Event()
for _ in range(4):
    threading.Thread(target=stop.wait, daemon=True).start()
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, s.labels["model"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("gateway_model_process_")
    }


def test_a_live_process_is_read(child: subprocess.Popen[str]) -> None:
    stat = read_process_stat(child.pid)
    assert stat is not None
    assert stat.resident_bytes > 64 * 1024 * 1024
    assert stat.threads >= 5
    assert stat.cpu_seconds >= 0.25


def test_collector_reports_each_model_and_leaves_out_the_gone(child: subprocess.Popen[str]) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=10)
    registry = CollectorRegistry()
    registry.register(ModelProcessCollector(lambda: {"a": child.pid, "b": dead.pid, "c": None}))
    samples = _samples(registry)
    assert set(samples) == {
        ("gateway_model_process_resident_memory_bytes", "a"),
        ("gateway_model_process_cpu_seconds_total", "a"),
        ("gateway_model_process_threads", "a"),
    }
    assert samples[("gateway_model_process_resident_memory_bytes", "a")] > 64 * 1024 * 1024
    assert samples[("gateway_model_process_threads", "a")] >= 5


def test_command_names_with_spaces_and_parentheses(tmp_path: Path) -> None:
    own = Path("/proc/self/stat").read_text()
    rest = own[own.rindex(")") + 1 :]
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text("42 (odd) name (x)" + rest)
    stat = read_process_stat(42, tmp_path)
    reference = read_process_stat(0, tmp_path / "none")
    assert reference is None
    assert stat is not None and stat.threads >= 1 and stat.resident_bytes > 0


def test_a_failing_pid_source_leaves_the_page_up() -> None:
    def broken() -> dict[str, int | None]:
        raise RuntimeError("bug")

    registry = CollectorRegistry()
    registry.register(ModelProcessCollector(broken))
    assert "gateway_model_process" not in generate_latest(registry).decode()
