from __future__ import annotations

import random
import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway.stats import BatchRecord, RequestRecord
from metrics import Instruments, PrometheusRecorder
from metrics.recorder import known_error_types

MODEL = "gpt2"
TRANSLATOR = "Helsinki-NLP/opus-mt-en-zh"
ROUTES = ("/generate", "/generate_stream", "/", "/translate")
LANGUAGES = ("en", "zh", "de", "fr", "es", "ja")

# The contract's label sets (without the histogram's own ``le``).
CONTRACT_LABELS = {
    "gateway_requests": {"route", "status", "model"},
    "gateway_request_duration_seconds": {"route", "model"},
    "gateway_queue_wait_seconds": {"model"},
    "gateway_inference_duration_seconds": {"model"},
    "gateway_time_to_first_token_seconds": {"model"},
    "gateway_time_per_output_token_seconds": {"model"},
    "gateway_prompt_tokens": {"model"},
    "gateway_generated_tokens": {"model"},
    "gateway_batch_size": {"model"},
    "gateway_circuit_breaker_transitions": {"model", "to_state"},
    "gateway_translation_requests": {"source_lang", "target_lang", "status"},
    "gateway_translation_duration_seconds": {"source_lang", "target_lang"},
    "gateway_errors": {"model", "error_type"},
}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def recorder(registry: CollectorRegistry) -> PrometheusRecorder:
    return PrometheusRecorder(Instruments(registry), models=[MODEL, TRANSLATOR], routes=ROUTES, languages=LANGUAGES)


def samples(registry: CollectorRegistry) -> list[Sample]:
    text = generate_latest(registry).decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    for s in samples(registry):
        if s.name == name and s.labels == labels:
            return s.value
    return None


def generate_record(**overrides: object) -> RequestRecord:
    fields: dict[str, object] = {
        "request_id": str(uuid.uuid4()),
        "route": "/generate",
        "model": MODEL,
        "status_code": 200,
        "status": "success",
        "latency_s": 0.5,
        "queue_s": 0.01,
        "inference_s": 0.4,
        "first_token_s": 0.05,
        "prompt_tokens": 7,
        "generated_tokens": 20,
        "batch_size": 4,
    }
    fields.update(overrides)
    return RequestRecord(**fields)  # type: ignore[arg-type]


def test_request_counts_histograms_and_tokens(registry: CollectorRegistry, recorder: PrometheusRecorder) -> None:
    recorder.request_finished(generate_record())
    recorder.request_finished(generate_record(latency_s=1.5, prompt_tokens=3, generated_tokens=10))
    recorder.request_finished(
        generate_record(
            status="rejected",
            status_code=429,
            queue_s=None,
            inference_s=None,
            first_token_s=None,
            prompt_tokens=0,
            generated_tokens=0,
            latency_s=0.001,
        )
    )

    ok = {"route": "/generate", "status": "success", "model": MODEL}
    assert value(registry, "gateway_requests_total", **ok) == 2
    assert value(registry, "gateway_requests_total", **{**ok, "status": "rejected"}) == 1
    route_model = {"route": "/generate", "model": MODEL}
    assert value(registry, "gateway_request_duration_seconds_count", **route_model) == 3
    assert value(registry, "gateway_request_duration_seconds_sum", **route_model) == pytest.approx(2.001)
    m = {"model": MODEL}
    assert value(registry, "gateway_queue_wait_seconds_count", **m) == 2  # None is not observed
    assert value(registry, "gateway_queue_wait_seconds_sum", **m) == pytest.approx(0.02)
    assert value(registry, "gateway_inference_duration_seconds_count", **m) == 2
    assert value(registry, "gateway_inference_duration_seconds_sum", **m) == pytest.approx(0.8)
    assert value(registry, "gateway_time_to_first_token_seconds_count", **m) == 2
    assert value(registry, "gateway_time_per_output_token_seconds_count", **m) == 2
    assert value(registry, "gateway_time_per_output_token_seconds_sum", **m) == pytest.approx(0.4 / 20 + 0.4 / 10)
    assert value(registry, "gateway_prompt_tokens_total", **m) == 10
    assert value(registry, "gateway_generated_tokens_total", **m) == 30
    # a generation request is not a translation
    assert not [s for s in samples(registry) if s.name.startswith("gateway_translation_")]


def test_single_token_has_no_time_per_output_token(registry: CollectorRegistry, recorder: PrometheusRecorder) -> None:
    recorder.request_finished(generate_record(generated_tokens=1))
    assert value(registry, "gateway_time_per_output_token_seconds_count", model=MODEL) is None


def test_histogram_buckets_are_cumulative(registry: CollectorRegistry, recorder: PrometheusRecorder) -> None:
    for latency in (0.003, 0.2, 7.0, 1000.0):
        recorder.request_finished(generate_record(latency_s=latency))
    labels = {"route": "/generate", "model": MODEL}
    bucket = "gateway_request_duration_seconds_bucket"
    assert value(registry, bucket, **labels, le="0.005") == 1
    assert value(registry, bucket, **labels, le="0.25") == 2
    assert value(registry, bucket, **labels, le="10.0") == 3
    assert value(registry, bucket, **labels, le="+Inf") == 4


def test_translation_languages_collapse(registry: CollectorRegistry, recorder: PrometheusRecorder) -> None:
    def translate(source: str | None, target: str | None, status: str = "success") -> None:
        recorder.request_finished(
            generate_record(
                route="/translate",
                model=TRANSLATOR,
                source_lang=source,
                target_lang=target,
                status=status,
                latency_s=0.25,
            )
        )

    translate("en", "zh-Hant")
    translate("EN", "zh")
    translate("xx", "de")
    translate(None, "pt-BR")
    translate("en", "fr", status="client_error")

    req = "gateway_translation_requests_total"
    assert value(registry, req, source_lang="en", target_lang="zh", status="success") == 2
    assert value(registry, req, source_lang="other", target_lang="de", status="success") == 1
    assert value(registry, req, source_lang="other", target_lang="other", status="success") == 1
    assert value(registry, req, source_lang="en", target_lang="fr", status="client_error") == 1
    dur = "gateway_translation_duration_seconds"
    assert value(registry, f"{dur}_count", source_lang="en", target_lang="zh") == 2
    assert value(registry, f"{dur}_sum", source_lang="en", target_lang="zh") == pytest.approx(0.5)
    lang_values = {s.labels[k] for s in samples(registry) for k in ("source_lang", "target_lang") if k in s.labels}
    assert lang_values == {"en", "zh", "de", "fr", "other"}
    # translations count as requests too
    assert value(registry, "gateway_requests_total", route="/translate", status="success", model=TRANSLATOR) == 4


def test_unknown_model_route_status_and_state_become_other(
    registry: CollectorRegistry, recorder: PrometheusRecorder
) -> None:
    recorder.request_finished(generate_record(model="someone/else", route="/v1/chat", status="weird"))
    recorder.request_finished(generate_record(model=""))
    recorder.batch_finished(BatchRecord(model="nope", size=3, inference_s=0.1, ok=True))
    recorder.breaker_transition("nope", "exploded")
    recorder.worker_replaced("nope")

    assert value(registry, "gateway_requests_total", route="other", status="other", model="other") == 1
    assert value(registry, "gateway_requests_total", route="/generate", status="success", model="other") == 1
    assert value(registry, "gateway_batch_size_count", model="other") == 1
    assert value(registry, "gateway_circuit_breaker_transitions_total", model="other", to_state="other") == 1
    assert value(registry, "gateway_worker_restarts_total", model="other") == 1


def test_batches_breaker_and_workers(registry: CollectorRegistry, recorder: PrometheusRecorder) -> None:
    recorder.batch_finished(BatchRecord(model=MODEL, size=3, inference_s=0.1, ok=True))
    recorder.batch_finished(BatchRecord(model=MODEL, size=64, inference_s=0.9, ok=False))
    recorder.breaker_transition(MODEL, "open")
    recorder.breaker_transition(MODEL, "half-open")
    recorder.breaker_transition(MODEL, "HALF_OPEN")
    recorder.breaker_transition(MODEL, "closed")
    recorder.worker_replaced(MODEL)

    assert value(registry, "gateway_batch_size_count", model=MODEL) == 2
    assert value(registry, "gateway_batch_size_sum", model=MODEL) == 67
    assert value(registry, "gateway_batch_size_bucket", model=MODEL, le="4.0") == 1
    assert value(registry, "gateway_batches_total", model=MODEL, outcome="ok") == 1
    assert value(registry, "gateway_batches_total", model=MODEL, outcome="error") == 1
    transitions = "gateway_circuit_breaker_transitions_total"
    assert value(registry, transitions, model=MODEL, to_state="open") == 1
    assert value(registry, transitions, model=MODEL, to_state="half_open") == 2
    assert value(registry, transitions, model=MODEL, to_state="closed") == 1
    assert value(registry, "gateway_worker_restarts_total", model=MODEL) == 1


def test_label_sets_are_exactly_the_contracts(registry: CollectorRegistry, recorder: PrometheusRecorder) -> None:
    recorder.request_finished(generate_record())
    recorder.request_finished(generate_record(route="/translate", source_lang="en", target_lang="de"))
    recorder.batch_finished(BatchRecord(model=MODEL, size=2, inference_s=0.1, ok=True))
    recorder.breaker_transition(MODEL, "open")
    recorder.request_finished(generate_record(status="server_error", error_type="model_error"))

    seen: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            seen.setdefault(family.name, set()).update(set(s.labels) - {"le"})
    for name, labels in CONTRACT_LABELS.items():
        assert seen[name] == labels, name


def _random_record(rng: random.Random) -> RequestRecord:
    def code() -> str | None:
        return rng.choice(
            [
                None,
                "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 3))),
                rng.choice(LANGUAGES) + "-" + rng.choice(["Hant", "BR", "x" + str(rng.random())]),
            ]
        )

    translate = rng.random() < 0.5
    return generate_record(
        request_id=uuid.UUID(int=rng.getrandbits(128)).hex,
        route=rng.choice(["/generate", "/translate", "/generate_stream", "/", f"/r/{rng.random()}"]),
        model=rng.choice([MODEL, TRANSLATOR, f"model-{rng.random()}"]),
        status=rng.choice(["success", "timeout", "server_error", f"s{rng.random()}"]),
        source_lang=code() if translate else None,
        target_lang=code() if translate else None,
        latency_s=rng.expovariate(1.0),
        generated_tokens=rng.randint(0, 100),
    )


def test_random_ids_and_languages_keep_series_bounded(registry: CollectorRegistry) -> None:
    recorder = PrometheusRecorder(Instruments(registry), models=[MODEL, TRANSLATOR], routes=ROUTES, languages=LANGUAGES)
    rng = random.Random(1234)
    before = len(samples(registry))
    for _ in range(10_000):
        recorder.request_finished(_random_record(rng))
    after = len(samples(registry))
    for _ in range(10_000):
        recorder.request_finished(_random_record(rng))
    after_more = len(samples(registry))

    allowed = {
        "route": {"/generate", "/generate_stream", "/", "/translate", "other"},
        "status": {"success", "timeout", "server_error", "other"},
        "model": {MODEL, TRANSLATOR, "other"},
        "source_lang": {*LANGUAGES, "other"},
        "target_lang": {*LANGUAGES, "other"},
        "error_type": {*known_error_types(), "other"},
    }
    # The most samples these label sets allow: per family, the product of the allowed values of its labels
    # times the samples of one series (a counter: _total and _created; a histogram: its buckets, _count,
    # _sum and _created). Random request ids, models, routes and language codes cannot go past it.
    bound = 0
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            for label, allowed_values in allowed.items():
                if label in s.labels:
                    assert s.labels[label] in allowed_values, (s.name, label, s.labels[label])
        label_names = {k for s in family.samples for k in s.labels} - {"le"}
        per_series = 2
        if family.type == "histogram":
            per_series = len({s.labels["le"] for s in family.samples if "le" in s.labels}) + 3
        combinations = 1
        for label in label_names:
            combinations *= len(allowed[label])
        bound += combinations * per_series

    # only the series born at zero for each configured model (worker restarts, errors by type) exist up front,
    # and the one unlabelled counter (rate-limit storage errors: _total and _created)
    assert before == 2 * 2 * (1 + len(known_error_types())) + 2
    assert 0 < after <= after_more <= bound < 10_000
    assert after_more - after < 0.01 * 10_000  # the second 10,000 records add (almost) nothing


def test_errors_by_type(registry: CollectorRegistry, recorder: PrometheusRecorder) -> None:
    recorder.request_finished(generate_record())  # a success counts no error
    recorder.request_finished(generate_record(status="server_error", error_type="out_of_memory"))
    recorder.request_finished(generate_record(status="server_error", error_type="out_of_memory"))
    recorder.request_finished(generate_record(status="rejected", error_type="queue_full", model=TRANSLATOR))
    recorder.request_finished(generate_record(status="client_error", error_type="not_found", model=""))
    recorder.request_finished(generate_record(status="server_error", error_type="made up " + str(uuid.uuid4())))

    assert value(registry, "gateway_errors_total", model=MODEL, error_type="out_of_memory") == 2
    assert value(registry, "gateway_errors_total", model=TRANSLATOR, error_type="queue_full") == 1
    assert value(registry, "gateway_errors_total", model="other", error_type="not_found") == 1
    assert value(registry, "gateway_errors_total", model=MODEL, error_type="other") == 1
    total = sum(s.value for s in samples(registry) if s.name == "gateway_errors_total")
    assert total == 5


def test_known_error_types_are_the_error_tree() -> None:
    from gateway import errors

    tree = {
        cls.error_type
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.GatewayError)
    }
    assert tree >= {"out_of_memory", "worker_stalled", "model_error", "queue_full", "circuit_open", "timeout"}
    assert known_error_types() == tree | {"not_found", "method_not_allowed", "http_error"}


def test_restarts_and_errors_start_at_zero_for_each_model(
    registry: CollectorRegistry, recorder: PrometheusRecorder
) -> None:
    for model in (MODEL, TRANSLATOR):
        assert value(registry, "gateway_worker_restarts_total", model=model) == 0
        assert value(registry, "gateway_errors_total", model=model, error_type="out_of_memory") == 0
    assert value(registry, "gateway_worker_restarts_total", model="other") is None
