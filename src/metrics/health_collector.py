"""``gateway_health_score`` and ``gateway_health_level`` per model (and ``model="overall"``), read at scrape time.

``read()`` returns model -> (score 0-100, level 0 healthy / 1 warning / 2 critical), as ``gateway.health``
computes them; this module only exports what it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import instruments as names

__all__ = ["HealthCollector"]

logger = logging.getLogger(__name__)


class HealthCollector(Collector):
    def __init__(self, read: Callable[[], Mapping[str, tuple[float, int]]]) -> None:
        self._read = read

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        m = list(names.MODEL_LABELS)
        return (
            GaugeMetricFamily(
                names.HEALTH_SCORE, "Health score 0-100 (docs/health.md); model=overall: the worst model's.", labels=m
            ),
            GaugeMetricFamily(names.HEALTH_LEVEL, "Health level: 0 healthy, 1 warning, 2 critical.", labels=m),
        )

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        try:
            values = dict(self._read())
        except Exception:
            logger.exception("computing the health score for /metrics failed")
            return []
        score, level = self._families()
        for model, (value, lvl) in sorted(values.items()):
            score.add_metric([model], float(value))
            level.add_metric([model], float(lvl))
        return [score, level]
