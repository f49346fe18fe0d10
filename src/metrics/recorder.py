"""Stats dataclasses in, metric updates out: the one place that turns ``gateway.stats`` records into
Prometheus observations.

Every label value is bounded here, so no caller can blow up the number of series:

* ``model``: one of the models given to the recorder, else ``other``;
* ``route``: one of the metered routes given to the recorder (the app's route table), else ``other``;
* ``status``: one of ``KNOWN_STATUSES`` (the contract's), else ``other``;
* ``source_lang`` / ``target_lang``: the base ISO 639 code (``zh-Hant`` -> ``zh``, lowercased) when it is in
  the configured set, else ``other`` (a missing code is ``other`` too);
* ``to_state``: ``closed``, ``half_open`` or ``open`` (``half-open`` is folded into ``half_open``), else
  ``other``;
* ``outcome``: ``ok`` or ``error``;
* ``flag``: one of ``KNOWN_FLAGS`` (the contract's), else ``other``;
* ``result`` (canary): ``pass``, ``fail`` or ``error``, else ``other``.
* ``error_type``: one of ``known_error_types()`` (every ``error_type`` of the error tree in ``gateway.errors``,
  plus the HTTP layer's ``not_found``, ``method_not_allowed`` and ``http_error``), else ``other``;
* ``key`` (rate limits): one of the configured keys' names, else ``other``; ``limit``: one of ``RATE_LIMITS``;
* ``route`` of an authentication failure: one of the app's paths (``known_paths``), else ``other``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from gateway.errors import GatewayError
from gateway.stats import BatchRecord, CanaryRecord, QualityRecord, RequestRecord

from .instruments import Instruments

__all__ = ["KNOWN_FLAGS", "KNOWN_STATUSES", "OTHER", "PrometheusRecorder", "base_language", "known_error_types"]

OTHER: Final = "other"
KNOWN_STATUSES: Final = frozenset({"success", "client_error", "rejected", "timeout", "cancelled", "server_error"})
_BREAKER_STATES: Final = frozenset({"closed", "half_open", "open"})
KNOWN_FLAGS: Final = frozenset(
    {"empty", "repetition", "truncated", "copy_through", "script_mismatch", "language_mismatch"}
)
_CANARY_RESULTS: Final = frozenset({"pass", "fail", "error"})
RATE_LIMITS: Final = ("requests", "tokens", "concurrent")
TRANSLATE_ROUTE: Final = "/translate"
# Answered by the HTTP layer for Starlette's own errors (gateway.http.errors), outside the error tree.
HTTP_ERROR_TYPES: Final = frozenset({"not_found", "method_not_allowed", "http_error"})


def known_error_types() -> frozenset[str]:
    """Every ``error_type`` of the error tree (walked, so that a class added to it is counted under its own
    name), plus the HTTP layer's."""
    found: set[str] = set()
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop()
        found.add(cls.error_type)
        pending.extend(cls.__subclasses__())
    return frozenset(found | HTTP_ERROR_TYPES)


def base_language(code: str) -> str:
    """The lowercased primary subtag of a language tag: ``zh-Hant`` -> ``zh``, ``pt_BR`` -> ``pt``."""
    return code.strip().replace("_", "-").split("-", 1)[0].lower()


class PrometheusRecorder:
    """A ``gateway.stats.StatsSink`` that records into ``Instruments``.

    ``models``, ``routes`` and ``languages`` are the bounded label sets: anything else is recorded as ``other``.
    Languages are compared on their base code, and the label carries the base code.
    """

    def __init__(
        self,
        instruments: Instruments,
        *,
        models: Iterable[str],
        routes: Iterable[str],
        languages: Iterable[str] = (),
        keys: Iterable[str] = (),
    ) -> None:
        self._m = instruments
        self._children: dict[tuple[Any, ...], Any] = {}
        self._models = frozenset(models)
        self._routes = frozenset(routes)
        self._languages = frozenset(base_language(code) for code in languages if code.strip())
        self._error_types = known_error_types()
        self._keys = frozenset(keys)
        self._paths: frozenset[str] = frozenset()
        # Born at 0 for every configured model, so that increase() sees the first restart or the first error of a
        # type (a series born at 1 shows no increase), and the alerts on them can fire on the first one.
        for model in sorted(self._models):
            self._child(self._m.worker_restarts, model=model)
            for error_type in sorted(self._error_types):
                self._child(self._m.errors, model=model, error_type=error_type)
        for key in sorted(self._keys):
            for limit in RATE_LIMITS:
                self._child(self._m.rate_limited, key=key, limit=limit)

    def known_paths(self, paths: Iterable[str]) -> None:
        """The app's route paths: the bounded ``route`` label of authentication failures (known once the app's
        routers are in place, after this recorder was made)."""
        self._paths = frozenset(paths)

    # --- label bounding ----------------------------------------------------------------------------

    def model_label(self, model: str | None) -> str:
        return model if model and model in self._models else OTHER

    def language_label(self, code: str | None) -> str:
        if not code:
            return OTHER
        base = base_language(code)
        return base if base in self._languages else OTHER

    def route_label(self, route: str) -> str:
        return route if route in self._routes else OTHER

    @staticmethod
    def status_label(status: str) -> str:
        return status if status in KNOWN_STATUSES else OTHER

    def error_type_label(self, error_type: str) -> str:
        return error_type if error_type in self._error_types else OTHER

    @staticmethod
    def breaker_state_label(to_state: str) -> str:
        state = to_state.strip().lower().replace("-", "_")
        return state if state in _BREAKER_STATES else OTHER

    # --- StatsSink ---------------------------------------------------------------------------------

    def request_finished(self, record: RequestRecord) -> None:
        m = self._m
        model = self.model_label(record.model)
        route = self.route_label(record.route)
        status = self.status_label(record.status)

        child = self._child
        child(m.requests, route=route, status=status, model=model).inc()
        child(m.request_duration, route=route, model=model).observe(record.latency_s)
        if record.error_type:
            child(m.errors, model=model, error_type=self.error_type_label(record.error_type)).inc()
        if record.queue_s is not None:
            child(m.queue_wait, model=model).observe(record.queue_s)
        if record.inference_s is not None:
            child(m.inference_duration, model=model).observe(record.inference_s)
        if record.first_token_s is not None:
            child(m.time_to_first_token, model=model).observe(record.first_token_s)
        # Kept simple on purpose: the mean time per generated token over the whole generate call (prefill
        # included). Subtracting TTFT is not sound because TTFT is measured from arrival (queue included)
        # while inference_s covers only the generate call; one token carries no decode time at all.
        if record.generated_tokens > 1 and record.inference_s:
            child(m.time_per_output_token, model=model).observe(record.inference_s / record.generated_tokens)
        if record.prompt_tokens > 0:
            child(m.prompt_tokens, model=model).inc(record.prompt_tokens)
        if record.generated_tokens > 0:
            child(m.generated_tokens, model=model).inc(record.generated_tokens)

        if record.route == TRANSLATE_ROUTE or record.source_lang is not None:
            source = self.language_label(record.source_lang)
            target = self.language_label(record.target_lang)
            child(m.translation_requests, source_lang=source, target_lang=target, status=status).inc()
            child(m.translation_duration, source_lang=source, target_lang=target).observe(record.latency_s)
        quality = record.quality
        if quality is not None:
            self.output_evaluated(
                QualityRecord(
                    model=record.model,
                    route=record.route,
                    flags=quality.flags,
                    score=quality.score,
                    rolling_score=quality.rolling_score,
                    source_lang=record.source_lang,
                    target_lang=record.target_lang,
                    length_ratios=quality.length_ratios,
                )
            )

    def _child(self, metric: Any, **labels: str) -> Any:
        """``metric.labels(**labels)``, looked up once per label set (the sets are bounded; ``labels()`` costs more
        than the update itself, several times per request and once per batch). A series still appears only once
        it is used."""
        key = (id(metric), *labels.values())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**labels)
        return child

    def batch_finished(self, record: BatchRecord) -> None:
        model = self.model_label(record.model)
        self._child(self._m.batch_size, model=model).observe(record.size)
        self._child(self._m.batches, model=model, outcome="ok" if record.ok else "error").inc()

    def breaker_transition(self, model: str, to_state: str) -> None:
        self._m.circuit_breaker_transitions.labels(
            model=self.model_label(model), to_state=self.breaker_state_label(to_state)
        ).inc()

    def rate_limited(self, key: str, limit: str) -> None:
        """A request refused by a key's limit (``gateway.ratelimit.RateLimitSink``)."""
        key_label = key if key in self._keys else OTHER
        self._child(self._m.rate_limited, key=key_label, limit=limit if limit in RATE_LIMITS else OTHER).inc()

    def rate_limit_storage_error(self) -> None:
        self._m.rate_limit_storage_errors.inc()

    def auth_failed(self, route: str) -> None:
        self._child(self._m.auth_failures, route=route if route in self._paths else OTHER).inc()

    def worker_replaced(self, model: str) -> None:
        self._child(self._m.worker_restarts, model=self.model_label(model)).inc()

    def output_evaluated(self, record: QualityRecord) -> None:
        """The quality of one answer (from ``request_finished`` when the request's record carries it)."""
        model = self.model_label(record.model)
        route = self.route_label(record.route)
        child = self._child
        child(self._m.output_evaluations, route=route, model=model).inc()
        for flag in record.flags:
            child(self._m.output_flags, model=model, route=route, flag=flag if flag in KNOWN_FLAGS else OTHER).inc()
        child(self._m.output_quality_score, model=model).set(record.rolling_score)
        if record.length_ratios:
            source = self.language_label(record.source_lang)
            target = self.language_label(record.target_lang)
            histogram = child(self._m.translation_length_ratio, source_lang=source, target_lang=target)
            for ratio in record.length_ratios:
                histogram.observe(ratio)

    def canary_finished(self, record: CanaryRecord) -> None:
        model = self.model_label(record.model)
        result = record.result if record.result in _CANARY_RESULTS else OTHER
        self._m.canary_checks.labels(model=model, result=result).inc()
        self._m.canary_duration.labels(model=model).observe(record.duration_s)
        if result == "pass":
            self._m.canary_last_success.labels(model=model).set(record.finished_at)
        if record.chrf is not None:
            self._m.canary_chrf.labels(model=model).set(record.chrf)
