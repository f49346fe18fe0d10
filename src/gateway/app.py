"""``create_app(settings)``: the FastAPI app, its middleware, and a lifespan that builds and tears down the
engine (models, schedulers, breakers) and the metrics. Nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway import __version__
from gateway.engine import Engine, RunnerFactory, model_ids
from gateway.errors import GatewayError
from gateway.http.auth import key_matches
from gateway.http.errors import install_error_handlers
from gateway.http.middleware import RequestContextMiddleware
from gateway.http.routes import install_routes
from gateway.languages import LANGUAGE_NAMES
from gateway.settings import Settings
from metrics import (
    GatewayStateCollector,
    GPUCollector,
    Instruments,
    ModelProcessCollector,
    PrometheusRecorder,
    TorchMemoryCollector,
    register_default_collectors,
)

log = logging.getLogger("gateway.app")

INFERENCE_ROUTES = ("/generate", "/generate_stream", "/")
METERED_ROUTES = frozenset((*INFERENCE_ROUTES, "/translate"))


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.monotonic,
    runner_factory: RunnerFactory | None = None,
) -> FastAPI:
    registry = registry if registry is not None else CollectorRegistry()
    instruments = Instruments(registry)
    recorder = PrometheusRecorder(
        instruments,
        languages=LANGUAGE_NAMES.keys(),
        models=set(model_ids(settings)),
    )
    engine = Engine(settings, recorder, runner_factory=runner_factory, clock=clock)
    registry.register(GatewayStateCollector(engine.snapshots, engine.model_infos))
    registry.register(GPUCollector())
    registry.register(TorchMemoryCollector(reports=engine.torch_memory if settings.model_process else None))
    registry.register(ModelProcessCollector(engine.model_pids))
    register_default_collectors(registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("gateway starting", extra={"version": __version__, "demo_models": engine.is_demo})
        loading = asyncio.create_task(engine.start(), name="load-models")
        app.state.loading = loading
        try:
            yield
        finally:
            if not loading.done():
                loading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loading
            await engine.close()
            log.info("gateway stopped")

    app = FastAPI(
        title="LLM inference gateway",
        version=__version__,
        lifespan=lifespan,
        description="TGI-compatible text generation and translation in front of Hugging Face models.",
        # Prometheus and the JSON access log are the gateway's telemetry. FastAPI's native OpenTelemetry looks up
        # the global providers on every request even when none is configured; it runs only when asked for.
        telemetry=None if settings.otel else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.engine = engine
    app.state.registry = registry
    install_error_handlers(app)
    install_routes(app, enable_faults=settings.enable_faults)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def model_for_route(path: str) -> str:
        if path == "/translate":
            return engine.translation_model_id
        if path in INFERENCE_ROUTES:
            return engine.generation_model_id
        return ""

    def shed(method: str, path: str, headers: dict[bytes, bytes]) -> GatewayError | None:
        """429 for an inference request while its model's queue is full, decided from the path alone: under
        overload a rejection then costs no routing, body parsing or validation. Only for callers with a valid
        key (the others get their 401 from the route), and only where the route would refuse the request with
        the same 429 whatever its body (``ModelService.refusal``)."""
        model = model_for_route(path)
        if method != "POST" or not model:
            return None
        refusal = engine.refusal(model)
        if refusal is None:
            return None
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if not key_matches(settings.api_key, authorization, headers.get(b"x-api-key", b"").decode("latin-1")):
            return None
        return refusal

    app.add_middleware(
        RequestContextMiddleware,
        sink=engine.sink,
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        log_payloads=settings.log_payloads,
        model_for_route=model_for_route,
        metered_routes=METERED_ROUTES,
        shed=shed,
    )
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"])
    return app
