"""A real ``Engine`` (and ``Gateway``) whose runners are ``FakeRunner``s, for the unit tier.

``Settings(model="fake/model", ...)`` names a model, so no demo model is built and nothing imports torch; the
``RunnerFactory`` the engine is given returns one ``FakeRunner`` per model (kept in ``FakeRunners.by_model``),
all on one ``ManualClock``. Everything from the facade down to the scheduler is the real code.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from gateway.engine import Engine
from gateway.gateway import Gateway
from gateway.runners.base import ModelRunner, RunnerConfig
from gateway.runners.faults import FaultInjector
from gateway.settings import Settings
from gateway.stats import NullSink, RequestRecord
from tests.clock import ManualClock
from tests.unit.fake_runner import FAKE_INFO, FakeRunner

GENERATION_ID = "fake/model"
TRANSLATION_ID = "fake/translator"


class RecordingSink(NullSink):
    """A stats sink that keeps what it is told."""

    def __init__(self) -> None:
        self.requests: list[RequestRecord] = []
        self.transitions: list[tuple[str, str]] = []
        self.replaced: list[str] = []

    def request_finished(self, record: RequestRecord) -> None:
        self.requests.append(record)

    def breaker_transition(self, model: str, to_state: str) -> None:
        self.transitions.append((model, to_state))

    def worker_replaced(self, model: str) -> None:
        self.replaced.append(model)


class FakeRunners:
    """The ``RunnerFactory``: a ``FakeRunner`` per model; ``failing`` model ids raise instead (a failed load), and
    the runners of ``failing_start`` ones raise when started (loaded, but their decode loop will not start)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.by_model: dict[str, FakeRunner] = {}
        self.configs: list[RunnerConfig] = []
        self.restarts: dict[str, Callable[[], None]] = {}
        self.failing: set[str] = set()
        self.failing_start: set[str] = set()

    def __call__(
        self, config: RunnerConfig, faults: FaultInjector, on_crash_restart: Callable[[], None]
    ) -> ModelRunner:
        self.configs.append(config)
        if config.model_id in self.failing:
            raise OSError(f"cannot load {config.model_id}")
        runner = FakeRunner(self.clock, info=dataclasses.replace(FAKE_INFO, model_id=config.model_id, is_demo=False))
        runner.fails_to_start = config.model_id in self.failing_start
        self.by_model[config.model_id] = runner
        self.restarts[config.model_id] = on_crash_restart
        return runner


def fake_settings(**overrides: Any) -> Settings:
    """Settings for a gateway of fake models, read from nothing but ``overrides`` (no ``GATEWAY_*`` variable)."""
    values: dict[str, Any] = {
        "model": GENERATION_ID,
        "translation_model": TRANSLATION_ID,
        "model_process": False,
        "max_batch_wait_ms": 0.0,
        "max_queue": 4,
        "max_batch_size": 4,
    }
    values.update(overrides)
    saved = {name: os.environ.pop(name) for name in [n for n in os.environ if n.startswith("GATEWAY_")]}
    try:
        return Settings(**values)
    finally:
        os.environ.update(saved)


class FakeGateway:
    """A ``Gateway`` over a real ``Engine`` of fake models, its runners, its sink and its clock."""

    def __init__(self, **overrides: Any) -> None:
        self.clock = ManualClock(start=100.0)
        self.settings = fake_settings(**overrides)
        self.runners = FakeRunners(self.clock)
        self.sink = RecordingSink()
        self.engine = Engine(self.settings, self.sink, runner_factory=self.runners, clock=self.clock)
        self.gateway = Gateway(self.engine)

    def runner(self, model_id: str = GENERATION_ID) -> FakeRunner:
        return self.runners.by_model[model_id]
