"""The engine: the models, their schedulers, breakers and services, built from ``Settings``.

Loading is blocking (``from_pretrained``), so ``load()`` runs on a thread while the HTTP side already answers
``/health`` and says "not ready" on ``/ready``. Nothing here knows HTTP or Prometheus: stats leave through
the ``StatsSink`` passed in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from gateway.breaker import BreakerState, CircuitBreaker
from gateway.errors import Draining, GatewayError
from gateway.runners.base import ModelRunner, RunnerConfig
from gateway.runners.faults import FaultInjector
from gateway.scheduler import ModelScheduler
from gateway.service import Lifecycle, Limits, ModelService
from gateway.settings import SAME_AS_GENERATION, Settings
from gateway.stats import GaugeSnapshot, StatsSink
from gateway.translation import Translator, default_template_languages
from gateway.types import ModelInfo

log = logging.getLogger("gateway.engine")

DEMO_NOTICE = "demo models with random weights: their output is not meaningful"

# (what to load, the fault switch, told when a model process that died on its own was replaced) -> runner
RunnerFactory = Callable[[RunnerConfig, FaultInjector, Callable[[], None]], ModelRunner]


class LoadState(enum.StrEnum):
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelPlan:
    generation: tuple[str, str | None]
    translation: tuple[str, str | None] | None  # None: the generation model through the prompt template
    is_demo: bool


def plan_models(settings: Settings) -> ModelPlan:
    """Which models to load: the user's, or the built-in demo models when none is configured."""
    if settings.uses_demo_models:
        from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID, ensure_demo_models

        paths = ensure_demo_models(settings.demo_cache_dir)
        gen = (DEMO_CAUSAL_ID, str(paths[DEMO_CAUSAL_ID]))
        if settings.translation_model == SAME_AS_GENERATION:
            return ModelPlan(gen, None, True)
        if settings.translation_model:
            return ModelPlan(gen, (settings.translation_model, None), True)
        return ModelPlan(gen, (DEMO_SEQ2SEQ_ID, str(paths[DEMO_SEQ2SEQ_ID])), True)
    assert settings.model is not None
    trans = settings.translation_model
    if trans is None or trans == SAME_AS_GENERATION or trans == settings.model:
        return ModelPlan((settings.model, None), None, False)
    return ModelPlan((settings.model, None), (trans, None), False)


def model_ids(settings: Settings) -> tuple[str, str]:
    """(generation model id, translation model id), known before anything is loaded."""
    from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID

    generation = settings.model or DEMO_CAUSAL_ID
    trans = settings.translation_model
    if trans and trans != SAME_AS_GENERATION:
        return generation, trans
    if settings.uses_demo_models and trans is None:
        return generation, DEMO_SEQ2SEQ_ID
    return generation, generation


def transformers_factory(settings: Settings) -> RunnerFactory:
    """Runners of ``transformers`` models: in a model process of their own, or on a thread of this one."""

    def build(config: RunnerConfig, faults: FaultInjector, on_crash_restart: Callable[[], None]) -> ModelRunner:
        if settings.model_process:
            from gateway.runners.process_runner import ProcessRunner

            return ProcessRunner(config, faults, on_crash_restart=on_crash_restart)
        from gateway.runners.transformers_runner import TransformersRunner

        return TransformersRunner(config, faults)

    return build


class Engine:
    def __init__(
        self,
        settings: Settings,
        sink: StatsSink,
        *,
        runner_factory: RunnerFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.clock = clock
        self.runner_factory = runner_factory or transformers_factory(settings)
        self.faults = FaultInjector()
        self.lifecycle = Lifecycle()
        self.state = LoadState.LOADING
        self.error: str | None = None
        self.services: dict[str, ModelService] = {}
        self.generation: ModelService | None = None
        self.translator: Translator | None = None
        self.is_demo = settings.uses_demo_models
        self.generation_model_id, self.translation_model_id = model_ids(settings)
        self.model_ids = (self.generation_model_id, self.translation_model_id)

    # -- lifecycle --

    async def start(self) -> None:
        """Load the models on a thread, then start the workers. Failures leave the engine FAILED (not ready)."""
        try:
            runners = await asyncio.to_thread(self._load_runners)
        except Exception as exc:
            self._failed(exc)
            return
        try:
            self._serve(runners)
        except Exception as exc:
            # Loaded, but not servable (a broken languages file, a decode loop that will not start): as a failed load.
            for service in self.services.values():
                if service.started:
                    await service.scheduler.close(Draining())
            for runner in runners.values():
                runner.close()  # no model process left behind
            self.services, self.generation, self.translator = {}, None, None
            self._failed(exc)
            return
        self.state = LoadState.LOADED
        for info in self.model_infos():
            log.info(
                "model loaded",
                extra={
                    "model": info.model_id,
                    "task": info.task,
                    "device": info.device,
                    "dtype": info.dtype,
                    "demo": info.is_demo,
                    **({"notice": DEMO_NOTICE} if info.is_demo else {}),
                },
            )

    def _failed(self, exc: Exception) -> None:
        self.state = LoadState.FAILED
        self.error = type(exc).__name__
        log.error("model load failed", extra={"error_type": "load_failed", "error": repr(exc)[:500]})

    def _serve(self, runners: dict[str, ModelRunner]) -> None:
        """The loaded runners' services, the translator, and their schedulers started."""
        for name, runner in runners.items():
            self.services[name] = self._service(name, runner)
        self.generation = self.services[self.generation_model_id]
        trans = self.services[self.translation_model_id]
        spec = trans.runner.translation_spec(self.settings.translation_languages or default_template_languages())
        if self.settings.translation_languages:
            spec = dataclasses.replace(spec, languages=tuple(self.settings.translation_languages))
        self.translator = Translator(trans, spec, self.settings.translation_prompt_template)
        for service in self.services.values():
            service.scheduler.start()
            service.started = True

    def _load_runners(self) -> dict[str, ModelRunner]:
        """Load each model; model processes load side by side (each is mostly its own interpreter's start)."""
        plan = plan_models(self.settings)
        models = [plan.generation] + ([plan.translation] if plan.translation else [])

        def load(model: tuple[str, str | None]) -> ModelRunner:
            model_id, path = model
            log.info("loading model", extra={"model": model_id, "demo": plan.is_demo})
            started = time.perf_counter()
            config = RunnerConfig(
                model_id=model_id,
                path=path,
                revision=self.settings.revision,
                device=self.settings.device,
                dtype=self.settings.dtype,
                trust_remote_code=self.settings.trust_remote_code,
                is_demo=plan.is_demo,
                log_level=self.settings.log_level,
            )
            runner = self.runner_factory(config, self.faults, lambda: self.sink.worker_replaced(model_id))
            log.info(
                "model load finished", extra={"model": model_id, "load_s": round(time.perf_counter() - started, 3)}
            )
            return runner

        workers = len(models) if self.settings.model_process else 1
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gateway-load") as pool:
            futures = [pool.submit(load, model) for model in models]
            wait(futures)
        failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            for future in futures:
                if future.exception() is None:
                    future.result().close()  # no model process left behind
            raise failed[0]  # type: ignore[misc]
        return {model_id: future.result() for (model_id, _), future in zip(models, futures, strict=True)}

    def _service(self, name: str, runner: ModelRunner) -> ModelService:
        s = self.settings

        def on_transition(old: BreakerState, new: BreakerState) -> None:
            level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
            log.log(
                level,
                "circuit breaker transition",
                extra={"model": name, "from_state": old.label, "to_state": new.label},
            )
            self.sink.breaker_transition(name, new.label)

        breaker = CircuitBreaker(
            failure_threshold=s.breaker_failure_threshold,
            failure_ratio=s.breaker_failure_ratio,
            window=s.breaker_window,
            min_calls=s.breaker_min_calls,
            recovery_s=s.breaker_recovery_s,
            max_recovery_s=s.breaker_max_recovery_s,
            half_open_probes=s.breaker_half_open_probes,
            clock=self.clock,
            on_transition=on_transition,
        )
        scheduler = ModelScheduler(
            name,
            runner,
            max_queue=s.max_queue,
            max_batch_size=s.max_batch_size,
            max_batch_wait_s=s.max_batch_wait_ms / 1000.0,
            watchdog_s=s.watchdog_s,
            sink=self.sink,
            clock=self.clock,
        )
        return ModelService(name, runner, scheduler, breaker, Limits(s.max_input_tokens), self.lifecycle, self.clock)

    def begin_drain(self) -> None:
        if not self.lifecycle.draining:
            self.lifecycle.draining = True
            log.info("draining: refusing new requests, finishing in-flight ones")

    @property
    def busy(self) -> int:
        """Requests admitted and not yet answered, over all models."""
        return sum(s.in_flight for s in self.services.values())

    async def drain(self, timeout_s: float) -> bool:
        """Wait until in-flight work is done or ``timeout_s`` passes; True when everything finished."""
        until = time.monotonic() + timeout_s
        while self.busy and time.monotonic() < until:  # noqa: ASYNC110  (a bounded poll; no event to await)
            await asyncio.sleep(0.05)
        return self.busy == 0

    async def close(self) -> None:
        self.faults.clear()  # ends an injected stall, whose thread would otherwise hold up the process's exit
        for service in self.services.values():
            await service.scheduler.close(Draining())
            service.started = False
        for service in self.services.values():
            service.runner.close()

    # -- state for /ready, /info and metrics --

    def torch_memory(self) -> list[tuple[str, float, float]]:
        """(device, allocated, reserved) as each model process last reported it (only on a GPU)."""
        reports = []
        for runner in {id(s.runner): s.runner for s in self.services.values()}.values():
            memory = getattr(runner, "cuda_memory", None)
            if memory:
                reports.append((str(memory["device"]), float(memory["allocated"]), float(memory["reserved"])))
        return reports

    def model_pids(self) -> dict[str, int | None]:
        """Model id -> pid of the process its decode loop runs in: the model process's (None while it is being
        replaced), or this process's own in thread mode (``metrics.process_collector`` says why)."""
        pids: dict[str, int | None] = {}
        for name, service in self.services.items():
            runner = service.runner
            pids[name] = getattr(runner, "pid", None) if self.settings.model_process else os.getpid()
        return pids

    @property
    def ready(self) -> bool:
        return (
            self.state is LoadState.LOADED
            and not self.lifecycle.draining
            and all(s.ready for s in self.services.values())
        )

    def refusal(self, model_id: str) -> GatewayError | None:
        """The 429 a new request for ``model_id`` would get whatever its body (a full queue), or None."""
        service = self.services.get(model_id)
        return service.refusal() if service is not None else None

    def components(self) -> dict[str, object]:
        comps: dict[str, object] = {"models": self.state.value, "draining": self.lifecycle.draining}
        for name, service in self.services.items():
            comps[name] = {
                "loaded": service.started,
                "workers_alive": service.scheduler.workers_alive,
                "circuit_breaker": service.breaker.state.label,
            }
        if self.error:
            comps["error"] = self.error
        return comps

    def snapshots(self) -> list[GaugeSnapshot]:
        return [s.snapshot() for s in self.services.values()]

    def model_infos(self) -> list[ModelInfo]:
        infos = []
        for service in self.services.values():
            info = service.runner.info
            if self.translator is not None and self.translator.service is service:
                info = dataclasses.replace(
                    info, languages=self.translator.languages, translation_style=self.translator.spec.style
                )
            infos.append(info)
        return infos
