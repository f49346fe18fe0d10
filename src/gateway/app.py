"""``create_app(settings)``: the app, its middleware, and a lifespan that starts and stops the gateway (models,
schedulers, breakers). Nothing happens at import time.

Middleware, outermost first: CORS (only when configured), the request context (request id, access log, last
net for errors), authentication (deny by default once a key is configured), size limits, load shedding; then the
routers of each protocol adapter over one ``Gateway``, which holds the keys' rate limits.

Every finished request and batch goes to one sink, a ``FanOut`` of the Prometheus recorder and the health
score's ``RequestWindow``; the ``StatusBoard`` reads that window and the facade, and answers both the health
gauges on ``/metrics`` and ``/status.json``, so the two always agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from fastapi.routing import iter_route_contexts
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway import __version__
from gateway.canary import build_canary, run_when_loaded
from gateway.engine import Engine, RunnerFactory, model_ids
from gateway.gateway import Gateway
from gateway.health import RequestWindow
from gateway.http.context import RequestContext
from gateway.http.errors import install_error_handlers
from gateway.http.keys import Authentication, declare_security
from gateway.http.limits import SizeLimits
from gateway.http.openai.routes import openai_router
from gateway.http.openapi import install_openapi
from gateway.http.ops import faults_router, ops_router
from gateway.http.routing import ROUTES
from gateway.http.shedding import LoadShedding
from gateway.http.status import status_router
from gateway.http.tgi import tgi_router
from gateway.keys import KeyRing, key_ring
from gateway.languages import LANGUAGE_NAMES
from gateway.quality.canary_runner import CanaryRunner
from gateway.ratelimit import RateLimiter, rate_limit_storage
from gateway.settings import Settings
from gateway.stats import FanOut, StatsSink
from gateway.status_board import StatusBoard
from metrics import (
    GatewayStateCollector,
    GPUCollector,
    HealthCollector,
    Instruments,
    ModelProcessCollector,
    PrometheusRecorder,
    TorchMemoryCollector,
    register_default_collectors,
)

log = logging.getLogger("gateway.app")


class GatewayApp(FastAPI):
    """The FastAPI app, with the ``Gateway`` it serves (the CLI drains it on SIGTERM)."""

    gateway: Gateway
    status_board: StatusBoard


def create_app(
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.monotonic,
    runner_factory: RunnerFactory | None = None,
) -> GatewayApp:
    registry = registry if registry is not None else CollectorRegistry()
    models = model_ids(settings)
    keys = key_ring(settings)
    languages, routes = LANGUAGE_NAMES.keys(), ROUTES.metered
    recorder = PrometheusRecorder(
        Instruments(registry), models=set(models), languages=languages, routes=routes, keys=keys.names
    )
    window = RequestWindow(settings.health_window_s, clock=clock)
    sink = FanOut(recorder, window)
    limiter = _limiter(settings, recorder) if keys else None  # no key, no limits
    gateway = Gateway(Engine(settings, sink, runner_factory=runner_factory, clock=clock), limiter)
    canary = build_canary(gateway, sink)
    gpu = GPUCollector()
    board = _status_board(gateway, window, gpu, canary, clock)
    _register_collectors(registry, gateway, settings, gpu, board)

    app = GatewayApp(
        title="LLM inference gateway",
        version=__version__,
        lifespan=_lifespan(gateway, canary, settings),
        description="TGI-compatible text generation and translation in front of Hugging Face models.",
        # Starlette's trailing-slash redirect builds its Location from the Host header (an open redirect); the
        # routes are exact, so "/generate/" is a 404.
        redirect_slashes=False,
        # Prometheus and the JSON access log are the gateway's telemetry. FastAPI's native OpenTelemetry looks up
        # the global providers on every request even when none is configured; it runs only when asked for.
        telemetry=None if settings.otel else {"tracing": False, "metrics": False, "logs": False},
    )
    app.gateway = gateway
    app.status_board = board
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(ops_router(gateway))
    app.include_router(status_router(board, settings.alertmanager_url))
    app.include_router(tgi_router(gateway))
    app.include_router(openai_router(gateway))
    if settings.enable_faults:
        app.include_router(faults_router(gateway))

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    if keys:
        _declare_security(app, settings.public_routes)
    _install_middleware(app, gateway, sink, recorder, settings, keys)
    return app


def _limiter(settings: Settings, sink: PrometheusRecorder) -> RateLimiter:
    storage = rate_limit_storage(settings.rate_limit_storage)
    return RateLimiter(storage, sink=sink, on_storage_error=settings.rate_limit_on_storage_error)


def _declare_security(app: FastAPI, public_paths: list[str]) -> None:
    """The OpenAPI document declares the key (bearer or ``X-API-Key``) on every route that needs it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = declare_security(build(), public_paths)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_paths(app: FastAPI) -> list[str]:
    """Every path the app routes (included routers flattened, as the OpenAPI document sees them)."""
    return [ctx.path for ctx in iter_route_contexts(app.routes) if ctx.path is not None]


def _lifespan(
    gateway: Gateway, canary: CanaryRunner | None, settings: Settings
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Load the models in the background (``/health`` answers meanwhile, ``/ready`` says not yet), run the canary
    once they are loaded, and close everything on the way out."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("gateway starting", extra={"version": __version__, "demo_models": settings.uses_demo_models})
        loading = asyncio.create_task(gateway.start(), name="load-models")
        watching = None if canary is None else asyncio.create_task(run_when_loaded(loading, canary), name="canary")
        try:
            yield
        finally:
            for task in (watching, loading):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await gateway.close()
            log.info("gateway stopped")

    return lifespan


def _status_board(
    gateway: Gateway,
    window: RequestWindow,
    gpu: GPUCollector,
    canary: CanaryRunner | None,
    clock: Callable[[], float],
) -> StatusBoard:
    """The health score's and the status page's one reader. Quality off, or no canary: those components are
    absent and left out of the score (docs/health.md)."""
    return StatusBoard(
        window,
        snapshots=gateway.snapshots,
        infos=gateway.model_infos,
        version=__version__,
        state=gateway.model_state,
        gpu_memory=gpu.fullest_memory,
        quality_score=gateway.quality_score,
        canary=canary.status if canary is not None else (lambda model: (None, None)),
        clock=clock,
    )


def _install_middleware(
    app: FastAPI, gateway: Gateway, sink: StatsSink, recorder: PrometheusRecorder, settings: Settings, keys: KeyRing
) -> None:
    """Outermost first: CORS (when configured), request context, authentication, size limits, load shedding."""

    def model_for_path(path: str) -> str:
        role = ROUTES.role(path)
        return "" if role is None else gateway.model_id(role)

    # Every path the app answers (for the bounded route label of authentication failures), once all routes exist.
    recorder.known_paths(app_paths(app))
    # add_middleware wraps what is there: the last one added is the outermost.
    app.add_middleware(LoadShedding, gateway=gateway, routes=ROUTES)
    app.add_middleware(
        SizeLimits,
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    app.add_middleware(Authentication, keys=keys, public_paths=settings.public_routes, on_failure=recorder.auth_failed)
    app.add_middleware(
        RequestContext,
        sink=sink,
        metered=ROUTES.metered,
        model_for_path=model_for_path,
        log_payloads=settings.log_payloads,
    )
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"])


def _register_collectors(
    registry: CollectorRegistry, gateway: Gateway, settings: Settings, gpu: GPUCollector, board: StatusBoard
) -> None:
    """Values read at scrape time: queue, breaker and workers per model, health, GPU (NVML), torch memory,
    process."""
    registry.register(GatewayStateCollector(gateway.snapshots, gateway.model_infos))
    registry.register(HealthCollector(board.gauges))
    registry.register(gpu)
    registry.register(TorchMemoryCollector(reports=gateway.torch_memory if settings.model_process else None))
    registry.register(ModelProcessCollector(gateway.model_pids))
    register_default_collectors(registry)
