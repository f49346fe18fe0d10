"""Every metric name, label set and bucket list of the gateway, in one place.

``Instruments(registry)`` creates the event-driven metrics (counters and histograms, updated by
``metrics.recorder``) on the registry it is given; the names of the scrape-time gauges built by
``metrics.collectors`` are declared here too, so that this module is the whole catalogue.

Bucket bounds (seconds unless said otherwise), and why:

* ``DURATION_BUCKETS`` (request duration, inference duration, translation duration):
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300.
  An LLM request ranges from a few milliseconds (a rejected or tiny request on a GPU) to minutes (a long
  generation on CPU, or a request that runs into the deadline); the 1-2.5-5 steps keep the relative error
  of ``histogram_quantile`` roughly constant across that range, and 20/30 s give resolution near the usual
  request timeouts, where latency SLO alerts sit.
* ``QUEUE_WAIT_BUCKETS``: 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120.
  In a healthy gateway the wait is the batching window (a few milliseconds), so the low end is finer;
  under overload it grows up to the request timeout.
* ``TTFT_BUCKETS`` (time to first token): 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1,
  1.5, 2, 3, 5, 7.5, 10, 20, 30, 60. Interactive SLOs are set between 100 ms and a few seconds, so that band
  is dense; the tail reaches a minute for long prompts on slow devices.
* ``TIME_PER_TOKEN_BUCKETS`` (time per output token): 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025,
  0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2. A decode step takes 1-50 ms on a GPU (dense
  steps there: 20 ms/token is 50 tokens/s, the usual "fast enough to read" line) and up to seconds on CPU.
* ``BATCH_SIZE_BUCKETS`` (rows per ``generate`` call): powers of two 1 ... 256, the usual batch limits.
* ``LENGTH_RATIO_BUCKETS`` (translation output/input characters): 0.1 ... 10. A healthy pair sits in a narrow
  band of its own (about 0.3 for English to Chinese, 1.1-1.3 for English to German), so the steps are dense
  around 0.25-2; near 0 (an empty or cut answer) and far above 2 (a loop, or an explanation added) are what
  the quality dashboards look for.
* ``CANARY_DURATION_BUCKETS``: ``DURATION_BUCKETS``; a canary is one ordinary request.

Labels are bounded by the recorder (unknown values become ``other``); no request ids or free text.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "DURATION_BUCKETS",
    "LENGTH_RATIO_BUCKETS",
    "QUEUE_WAIT_BUCKETS",
    "TIME_PER_TOKEN_BUCKETS",
    "TTFT_BUCKETS",
    "Instruments",
]

# --- buckets (one row per list: easier to read than one bound per line) -------------------------------

# fmt: off
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)
QUEUE_WAIT_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)
TTFT_BUCKETS: Final[tuple[float, ...]] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0,
    20.0, 30.0, 60.0,
)
TIME_PER_TOKEN_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.5, 1.0, 2.0,
)
BATCH_SIZE_BUCKETS: Final[tuple[float, ...]] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LENGTH_RATIO_BUCKETS: Final[tuple[float, ...]] = (
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 3.0, 5.0, 10.0,
)
# fmt: on

# --- label sets ----------------------------------------------------------------------------------------

MODEL_LABELS: Final = ("model",)
REQUEST_LABELS: Final = ("route", "status", "model")
ROUTE_MODEL_LABELS: Final = ("route", "model")
BREAKER_TRANSITION_LABELS: Final = ("model", "to_state")
TRANSLATION_REQUEST_LABELS: Final = ("source_lang", "target_lang", "status")
TRANSLATION_DURATION_LABELS: Final = ("source_lang", "target_lang")
BATCH_LABELS: Final = ("model", "outcome")
GPU_LABELS: Final = ("gpu", "name")
TORCH_LABELS: Final = ("device",)
MODEL_INFO_LABELS: Final = ("model", "revision", "task", "device", "dtype")
OUTPUT_FLAG_LABELS: Final = ("model", "route", "flag")
CANARY_CHECK_LABELS: Final = ("model", "result")
ERROR_LABELS: Final = ("model", "error_type")
RATE_LIMITED_LABELS: Final = ("key", "limit")
ROUTE_LABELS: Final = ("route",)

# --- names of the scrape-time gauges (built fresh on each scrape by metrics.collectors) ----------------

QUEUE_DEPTH: Final = "gateway_queue_depth"
QUEUE_CAPACITY: Final = "gateway_queue_capacity"
REQUESTS_IN_FLIGHT: Final = "gateway_requests_in_flight"
CIRCUIT_BREAKER_STATE: Final = "gateway_circuit_breaker_state"
WORKERS_ALIVE: Final = "gateway_workers_alive"
MODEL_INFO: Final = "gateway_model_info"

GPU_MEMORY_USED: Final = "gateway_gpu_memory_used_bytes"
GPU_MEMORY_TOTAL: Final = "gateway_gpu_memory_total_bytes"
GPU_UTILIZATION: Final = "gateway_gpu_utilization_ratio"
GPU_TEMPERATURE: Final = "gateway_gpu_temperature_celsius"
GPU_POWER: Final = "gateway_gpu_power_watts"
NVML_UP: Final = "gateway_nvml_up"
# A counter family; prometheus_client appends ``_total`` to a CounterMetricFamily's name.
NVML_READ_ERRORS: Final = "gateway_nvml_read_errors"

TORCH_MEMORY_ALLOCATED: Final = "gateway_torch_memory_allocated_bytes"
TORCH_MEMORY_RESERVED: Final = "gateway_torch_memory_reserved_bytes"

# Read from /proc/<pid>/stat of each model process (metrics.process_collector). The CPU one is a counter family:
# exposed as gateway_model_process_cpu_seconds_total.
MODEL_PROCESS_RESIDENT_MEMORY: Final = "gateway_model_process_resident_memory_bytes"
MODEL_PROCESS_CPU: Final = "gateway_model_process_cpu_seconds"
MODEL_PROCESS_THREADS: Final = "gateway_model_process_threads"

# The health score (gateway.health), per model and "overall" (metrics.health_collector).
HEALTH_SCORE: Final = "gateway_health_score"
HEALTH_LEVEL: Final = "gateway_health_level"


class Instruments:
    """The gateway's counters and histograms, created on ``registry`` (never the global one).

    Counter names are given without ``_total``: prometheus_client appends it, so ``requests`` is exposed as
    ``gateway_requests_total``.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        self.requests = Counter(
            "gateway_requests",
            "Finished HTTP requests by route, outcome and model.",
            REQUEST_LABELS,
            registry=registry,
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from receiving a request to its last byte, by route and model.",
            ROUTE_MODEL_LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "gateway_queue_wait_seconds",
            "Time a request waited in the admission queue before its batch started.",
            MODEL_LABELS,
            buckets=QUEUE_WAIT_BUCKETS,
            registry=registry,
        )
        self.inference_duration = Histogram(
            "gateway_inference_duration_seconds",
            "Model time of the generate call that served a request (one observation per request).",
            MODEL_LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "gateway_time_to_first_token_seconds",
            "Time until a request's first generated token.",
            MODEL_LABELS,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.time_per_output_token = Histogram(
            "gateway_time_per_output_token_seconds",
            "Inference time divided by generated tokens, for requests with more than one generated token.",
            MODEL_LABELS,
            buckets=TIME_PER_TOKEN_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "gateway_prompt_tokens",
            "Prompt tokens of finished requests.",
            MODEL_LABELS,
            registry=registry,
        )
        self.generated_tokens = Counter(
            "gateway_generated_tokens",
            "Generated tokens of finished requests.",
            MODEL_LABELS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "gateway_batch_size",
            "Rows per generate call.",
            MODEL_LABELS,
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.batches = Counter(
            "gateway_batches",
            "Generate calls by outcome (ok or error).",
            BATCH_LABELS,
            registry=registry,
        )
        self.circuit_breaker_transitions = Counter(
            "gateway_circuit_breaker_transitions",
            "Circuit breaker state changes, by the state entered.",
            BREAKER_TRANSITION_LABELS,
            registry=registry,
        )
        self.errors = Counter(
            "gateway_errors",
            "Failed requests by model and error_type (the error tree's bounded set; anything else is 'other').",
            ERROR_LABELS,
            registry=registry,
        )
        self.worker_restarts = Counter(
            "gateway_worker_restarts",
            "Model workers replaced after dying or hanging.",
            MODEL_LABELS,
            registry=registry,
        )
        self.rate_limited = Counter(
            "gateway_rate_limited",
            "Requests refused by a key's rate limit, by the key's name (never the key) and limit (requests, tokens, "
            "concurrent).",
            RATE_LIMITED_LABELS,
            registry=registry,
        )
        self.auth_failures = Counter(
            "gateway_auth_failures",
            "Requests refused for a missing or unknown API key, by route (paths outside the app's routes: other).",
            ROUTE_LABELS,
            registry=registry,
        )
        self.rate_limit_storage_errors = Counter(
            "gateway_rate_limit_storage_errors",
            "Rate-limit checks that could not reach their storage (Redis); allowed or denied by setting.",
            registry=registry,
        )
        self.translation_requests = Counter(
            "gateway_translation_requests",
            "Finished translation requests by language pair (unknown codes as 'other') and outcome.",
            TRANSLATION_REQUEST_LABELS,
            registry=registry,
        )
        self.translation_duration = Histogram(
            "gateway_translation_duration_seconds",
            "Duration of translation requests by language pair (unknown codes as 'other').",
            TRANSLATION_DURATION_LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

        # --- output quality (gateway.quality) ---
        self.output_flags = Counter(
            "gateway_output_flags",
            "Responses that raised a quality flag (empty, repetition, truncated, copy_through, script_mismatch, "
            "language_mismatch), by model and route.",
            OUTPUT_FLAG_LABELS,
            registry=registry,
        )
        self.output_quality_score = Gauge(
            "gateway_output_quality_score",
            "Rolling mean of the per-response quality score (0 to 1) over the model's last responses.",
            MODEL_LABELS,
            registry=registry,
        )
        self.output_evaluations = Counter(
            "gateway_output_evaluations",
            "Responses whose quality was evaluated (the denominator of the flag rates).",
            ROUTE_MODEL_LABELS,
            registry=registry,
        )
        self.translation_length_ratio = Histogram(
            "gateway_translation_length_ratio",
            "Output over input characters of translated segments, by language pair (unknown codes as 'other').",
            TRANSLATION_DURATION_LABELS,
            buckets=LENGTH_RATIO_BUCKETS,
            registry=registry,
        )
        self.canary_checks = Counter(
            "gateway_canary_checks",
            "Canary checks by model and result (pass, fail, error).",
            CANARY_CHECK_LABELS,
            registry=registry,
        )
        self.canary_duration = Histogram(
            "gateway_canary_duration_seconds",
            "Duration of canary requests, through the full serving path.",
            MODEL_LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.canary_last_success = Gauge(
            "gateway_canary_last_success_timestamp_seconds",
            "Unix time of the model's last passing canary check.",
            MODEL_LABELS,
            registry=registry,
        )
        self.canary_chrf = Gauge(
            "gateway_canary_chrf_score",
            "chrF (0 to 100) of the model's last canary check that had a reference translation.",
            MODEL_LABELS,
            registry=registry,
        )
