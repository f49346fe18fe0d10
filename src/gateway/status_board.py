"""One object that reads the gateway's state through plain callables and answers both the health gauges and the
status document, so that ``/metrics`` and ``/status.json`` always agree.

Wiring (in ``create_app``, with the facade's accessors)::

    window = RequestWindow(settings.health_window_s)          # also a StatsSink: FanOut(recorder, window)
    board = StatusBoard(window, snapshots=gateway.snapshots, infos=gateway.model_infos, version=__version__)
    registry.register(HealthCollector(board.gauges))
    # GET /status.json (http/status.py) -> board.document(alerts, alerts_error)

The quality score, canary and GPU memory are optional callables: absent (None) they leave their health
components out (docs/health.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.alerts import ActiveAlert
from gateway.health import Health, RequestWindow, overall_health
from gateway.stats import GaugeSnapshot
from gateway.status import ModelStatus, build_status, model_health
from gateway.types import ModelInfo

__all__ = ["OVERALL", "StatusBoard"]

OVERALL = "overall"

# (used bytes, total bytes) of the fullest GPU, or None without a GPU
GpuReading = Callable[[], tuple[float, float] | None]


class StatusBoard:
    def __init__(
        self,
        window: RequestWindow,
        *,
        snapshots: Callable[[], Sequence[GaugeSnapshot]],
        infos: Callable[[], Sequence[ModelInfo]],
        version: str,
        state: Callable[[str], str] = lambda model: "ready",
        gpu_memory: GpuReading = lambda: None,
        quality_score: Callable[[str], float | None] = lambda model: None,
        canary: Callable[[str], tuple[str | None, float | None]] = lambda model: (None, None),
        ttft_target_s: float = 2.0,
        time_per_token_target_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._window = window
        self._snapshots = snapshots
        self._infos = infos
        self._version = version
        self._state = state
        self._gpu_memory = gpu_memory
        self._quality_score = quality_score
        self._canary = canary  # (last result, pass ratio of recent checks)
        self._targets = (ttft_target_s, time_per_token_target_s)
        self._clock = clock
        self._wall_clock = wall_clock
        self._started = clock()

    def _models(self) -> list[ModelStatus]:
        infos = {info.model_id: info for info in self._infos()}
        gpu = self._gpu_memory()
        used_ratio = gpu[0] / gpu[1] if gpu and gpu[1] > 0 else None
        out = []
        for gauges in self._snapshots():
            model = gauges.model
            stats = self._window.stats(model)
            quality = self._quality_score(model)
            last_canary, canary_ratio = self._canary(model)
            health = model_health(
                gauges,
                stats,
                gpu_memory_used_ratio=used_ratio,
                quality_score=quality,
                canary_pass_ratio=canary_ratio,
                ttft_target_s=self._targets[0],
                time_per_token_target_s=self._targets[1],
            )
            info = infos.get(model)
            out.append(
                ModelStatus(
                    model=model,
                    task=info.task if info else "",
                    device=info.device if info else "",
                    state=self._state(model),
                    gauges=gauges,
                    window=stats,
                    health=health,
                    quality_score=quality,
                    canary=last_canary,
                    gpu_memory_used_bytes=gpu[0] if gpu else None,
                    gpu_memory_total_bytes=gpu[1] if gpu else None,
                )
            )
        return out

    def healths(self) -> dict[str, Health]:
        """Model -> health, plus ``"overall"``."""
        models = {m.model: m.health for m in self._models()}
        return {**models, OVERALL: overall_health(models.values())}

    def gauges(self) -> Mapping[str, tuple[float, int]]:
        """For ``metrics.HealthCollector``: model -> (score, level)."""
        return {model: (h.score, int(h.level)) for model, h in self.healths().items()}

    def document(self, alerts: Sequence[ActiveAlert] | None = None, alerts_error: str | None = None) -> dict[str, Any]:
        models = self._models()
        return build_status(
            version=self._version,
            uptime_s=self._clock() - self._started,
            window_s=self._window.window_s,
            overall=overall_health(m.health for m in models),
            models=models,
            alerts=alerts,
            alerts_error=alerts_error,
            now=self._wall_clock(),
        )
