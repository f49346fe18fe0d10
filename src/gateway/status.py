"""The data of ``GET /status.json`` (and of the page ``GET /status`` renders from it), built from plain inputs.

``model_health`` turns one model's gauges (``GaugeSnapshot``) and window (``RequestWindow.stats``) into its
``Health``; ``build_status`` lays everything out as the JSON document. Nothing here does I/O or knows HTTP: the
route gathers the inputs (the facade's snapshots, the window, the GPU reading, Alertmanager's alerts) and calls
these. The document's shape is what status_page.html reads; a test renders the page in Chromium against it.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.alerts import ActiveAlert
from gateway.health import Health, HealthInputs, WindowStats, score_model
from gateway.stats import GaugeSnapshot

__all__ = ["BREAKER_STATES", "ModelStatus", "build_status", "model_health"]

BREAKER_STATES = {0: "closed", 1: "half_open", 2: "open"}


@dataclass(frozen=True)
class ModelStatus:
    """One model's row on the page. ``quality_score``/``canary`` are None while the quality issue's inputs are
    absent; ``gpu_memory_*`` None off a GPU."""

    model: str
    task: str
    device: str
    state: str  # ready, loading, failed
    gauges: GaugeSnapshot
    window: WindowStats
    health: Health
    quality_score: float | None = None
    canary: str | None = None  # the last canary result: pass, fail or error
    gpu_memory_used_bytes: float | None = None
    gpu_memory_total_bytes: float | None = None


def model_health(
    gauges: GaugeSnapshot,
    window: WindowStats,
    *,
    workers_expected: int = 1,
    gpu_memory_used_ratio: float | None = None,
    quality_score: float | None = None,
    canary_pass_ratio: float | None = None,
    ttft_target_s: float = 2.0,
    time_per_token_target_s: float = 0.1,
) -> Health:
    return score_model(
        HealthInputs(
            breaker_state=gauges.breaker_state,
            workers_alive=gauges.workers_alive,
            workers_expected=workers_expected,
            queue_depth=gauges.queue_depth,
            queue_capacity=gauges.queue_capacity,
            error_ratio=window.error_ratio,
            ttft_p95_s=window.ttft_p95_s,
            time_per_token_p95_s=window.time_per_token_p95_s,
            ttft_target_s=ttft_target_s,
            time_per_token_target_s=time_per_token_target_s,
            gpu_memory_used_ratio=gpu_memory_used_ratio,
            quality_score=quality_score,
            canary_pass_ratio=canary_pass_ratio,
        )
    )


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _health(health: Health) -> dict[str, Any]:
    return {
        "score": health.score,
        "level": health.level.label,
        "components": {name: _round(sub, 3) for name, sub in health.components.items()},
        "reasons": list(health.reasons),
    }


def _model(m: ModelStatus) -> dict[str, Any]:
    g, w = m.gauges, m.window
    gpu = None
    if m.gpu_memory_used_bytes is not None and m.gpu_memory_total_bytes:
        gpu = {"used_bytes": m.gpu_memory_used_bytes, "total_bytes": m.gpu_memory_total_bytes}
    return {
        "model": m.model,
        "task": m.task,
        "device": m.device,
        "state": m.state,
        "breaker": BREAKER_STATES.get(g.breaker_state, "unknown"),
        "queue": {"depth": g.queue_depth, "capacity": g.queue_capacity},
        "in_flight": g.in_flight,
        "workers_alive": g.workers_alive,
        "requests": w.requests,
        "error_ratio": _round(w.error_ratio),
        "throughput_rps": _round(w.throughput_rps, 3),
        "latency_p50_s": _round(w.latency_p50_s),
        "latency_p95_s": _round(w.latency_p95_s),
        "time_to_first_token_p95_s": _round(w.ttft_p95_s),
        "time_per_output_token_p95_s": _round(w.time_per_token_p95_s),
        "errors_by_type": dict(sorted(w.errors_by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
        "quality_score": _round(m.quality_score, 3),
        "canary": m.canary,
        "gpu_memory": gpu,
        "health": _health(m.health),
    }


def build_status(
    *,
    version: str,
    uptime_s: float,
    window_s: float,
    overall: Health,
    models: Sequence[ModelStatus],
    alerts: Sequence[ActiveAlert] | None,
    alerts_error: str | None = None,
    now: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole document. ``alerts`` None: no Alertmanager configured; ``alerts_error``: it could not be read."""
    generated = datetime.datetime.fromtimestamp(now, tz=datetime.UTC).isoformat(timespec="seconds")
    document: dict[str, Any] = {
        "version": version,
        "generated_at": generated,
        "uptime_s": round(uptime_s, 1),
        "window_s": window_s,
        "overall": {"score": overall.score, "level": overall.level.label, "reasons": list(overall.reasons)},
        "models": [_model(m) for m in models],
        "alerts": {
            "configured": alerts is not None or alerts_error is not None,
            "error": alerts_error,
            "active": [a.as_dict() for a in alerts or ()],
        },
    }
    if extra:
        document.update(extra)
    return document
