"""Operational routes: liveness, readiness, info, and the fault switch (only with ``GATEWAY_ENABLE_FAULTS``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.gateway import Gateway
from gateway.http.openapi import ANY_ROUTE, ReadyResponse, errors, responses
from gateway.http.responses import JSONResponse
from gateway.http.schemas import FaultRequest


def ops_router(gateway: Gateway) -> APIRouter:
    router = APIRouter()

    @router.get("/health", responses=errors(ANY_ROUTE))
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @router.get("/ready", response_model=None, responses=responses(ANY_ROUTE, ReadyResponse))
    async def ready() -> JSONResponse:
        """Readiness: models loaded, workers alive, no breaker open, not draining."""
        ok = gateway.ready
        body = {"status": "ready" if ok else "not_ready", "components": gateway.components()}
        return JSONResponse(body, status_code=200 if ok else 503, headers={} if ok else {"Retry-After": "5"})

    @router.get("/info", responses=errors(ANY_ROUTE))
    async def info() -> dict[str, Any]:
        """Models, limits and batching settings."""
        return gateway.info()

    return router


def faults_router(gateway: Gateway) -> APIRouter:
    router = APIRouter(prefix="/admin/faults")

    @router.post("", responses=errors((*ANY_ROUTE, 401, 413, 422)))
    async def set_fault(body: FaultRequest) -> dict[str, Any]:
        """Make the model runners fail the next N batches (or a fraction of them)."""
        fault = gateway.set_fault(
            body.kind, count=body.count, ratio=body.ratio, seconds=body.seconds, output=body.output
        )
        return {"fault": fault}

    @router.delete("", responses=errors((*ANY_ROUTE, 401)))
    async def clear_fault() -> dict[str, Any]:
        gateway.clear_fault()
        return {"fault": None}

    return router
