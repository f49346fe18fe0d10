"""The facade (``gateway.gateway.Gateway``) over a real ``Engine`` (``gateway.engine``) of fake models.

The engine is built from ``Settings`` naming two models (``fake/model`` for generation, ``fake/translator`` for
``/translate``) and a ``RunnerFactory`` that returns a ``FakeRunner`` per model (``tests.unit.fake_engine``), so
loading, the services, breakers and schedulers are the real code; only the decoder is fake, stepped by the test.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from gateway.engine import LoadState, model_ids, plan_models
from gateway.errors import (
    BadRequest,
    Draining,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NotReady,
    QueueFull,
)
from gateway.gateway import ModelRole, StreamEvent
from gateway.settings import SAME_AS_GENERATION
from gateway.types import GenerationParams
from tests.unit.fake_engine import GENERATION_ID, TRANSLATION_ID, FakeGateway, fake_settings
from tests.unit.fake_runner import FakeRunner, decode_until, settle

T = TypeVar("T")
THREE = GenerationParams(max_new_tokens=3)


@pytest.fixture
async def make_gateway() -> AsyncIterator[Callable[..., Awaitable[FakeGateway]]]:
    made: list[FakeGateway] = []

    async def build(**overrides: Any) -> FakeGateway:
        fake = FakeGateway(**overrides)
        made.append(fake)
        await fake.gateway.start()
        return fake

    yield build
    for fake in made:
        await fake.gateway.close()


async def served(runner: FakeRunner, work: Awaitable[T]) -> T:
    """Await ``work`` while stepping ``runner``."""
    task = asyncio.ensure_future(work)
    await decode_until(runner, task.done, "the request answered")
    return task.result()


async def refused(work: Awaitable[Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await work
    return caught.value


# -- loading --


async def test_start_loads_each_model_through_the_factory(make_gateway: Callable[..., Awaitable[FakeGateway]]) -> None:
    g = await make_gateway(device="cpu", dtype="float32", revision="abc")
    assert g.gateway.loaded and g.gateway.ready and g.engine.state is LoadState.LOADED
    assert [c.model_id for c in g.runners.configs] == [GENERATION_ID, TRANSLATION_ID]
    config = g.runners.configs[0]
    assert config.path is None and not config.is_demo and config.device == "cpu" and config.dtype == "float32"
    assert config.revision == "abc"
    assert all(r.started for r in g.runners.by_model.values())
    assert g.gateway.served_models() == [GENERATION_ID, TRANSLATION_ID]
    assert g.gateway.model_id(ModelRole.GENERATION) == GENERATION_ID
    assert g.gateway.model_id(ModelRole.TRANSLATION) == TRANSLATION_ID


async def test_one_model_serves_both_roles_without_a_translation_model(
    make_gateway: Callable[..., Awaitable[FakeGateway]],
) -> None:
    g = await make_gateway(translation_model=None)
    assert list(g.runners.by_model) == [GENERATION_ID] and g.gateway.served_models() == [GENERATION_ID]
    result = await served(g.runner(), g.gateway.translate(["hi"], "en", "de", THREE, 60.0))
    assert len(result.outputs) == 1 and result.stats.model == GENERATION_ID


def test_the_model_plan_of_named_models() -> None:
    # No demo model is planned (nor built) when a model is named: the unit tier never needs torch for it.
    plan = plan_models(fake_settings())
    assert plan.generation == (GENERATION_ID, None) and plan.translation == (TRANSLATION_ID, None)
    assert not plan.is_demo
    assert plan_models(fake_settings(translation_model=SAME_AS_GENERATION)).translation is None
    assert plan_models(fake_settings(translation_model=GENERATION_ID)).translation is None
    assert model_ids(fake_settings()) == (GENERATION_ID, TRANSLATION_ID)
    assert model_ids(fake_settings(translation_model=None)) == (GENERATION_ID, GENERATION_ID)


async def test_a_failed_load_leaves_the_engine_failed_and_closes_what_loaded(
    make_gateway: Callable[..., Awaitable[FakeGateway]],
) -> None:
    g = FakeGateway()
    g.runners.failing.add(TRANSLATION_ID)
    await g.gateway.start()
    assert g.engine.state is LoadState.FAILED and g.engine.error == "OSError"
    assert not g.gateway.loaded and not g.gateway.ready
    assert g.runner(GENERATION_ID).closed  # no model process left behind
    assert isinstance(await refused(g.gateway.generate(["1"], THREE, 60.0)), NotReady)
    assert isinstance(await refused(g.gateway.translate(["a"], "en", "de", THREE, 60.0)), NotReady)
    assert g.gateway.components()["models"] == "failed" and g.gateway.components()["error"] == "OSError"
    await g.gateway.close()


async def test_a_model_that_loads_but_cannot_start_leaves_the_engine_failed_not_loading() -> None:
    """A failure after the load (here the second model's decode loop refusing to start, after the first one's
    started) fails the engine like a failed load: not ready, every runner closed, requests refused NotReady."""
    g = FakeGateway()
    g.runners.failing_start.add(TRANSLATION_ID)
    await g.gateway.start()
    assert g.engine.state is LoadState.FAILED and g.engine.error == "RuntimeError"
    assert not g.gateway.loaded and not g.gateway.ready
    assert g.runner(GENERATION_ID).started and g.runner(GENERATION_ID).closed
    assert g.runner(TRANSLATION_ID).closed
    assert isinstance(await refused(g.gateway.generate(["1"], THREE, 60.0)), NotReady)
    assert g.gateway.components()["models"] == "failed" and g.gateway.components()["error"] == "RuntimeError"
    await g.gateway.close()


async def test_a_replaced_model_process_and_breaker_transitions_reach_the_sink(
    make_gateway: Callable[..., Awaitable[FakeGateway]],
) -> None:
    g = await make_gateway()
    g.runners.restarts[TRANSLATION_ID]()  # what a process runner calls after replacing a dead model process
    assert g.sink.replaced == [TRANSLATION_ID]
    g.engine.services[GENERATION_ID].breaker.trip()
    assert g.sink.transitions == [(GENERATION_ID, "open")]
    assert not g.gateway.ready


# -- serving, routed to the right model --


async def test_generate_runs_on_the_generation_model(make_gateway: Callable[..., Awaitable[FakeGateway]]) -> None:
    g = await make_gateway()
    result = await served(g.runner(), g.gateway.generate(["ab", "c"], THREE, 60.0))
    assert [o.text for o in result.outputs] == ["<50><51><52>", "<51><52><53>"]  # "b" is 49, "c" 50
    assert result.stats.model == GENERATION_ID and result.stats.prompt_tokens == 3
    assert result.stats.generated_tokens == 6 and result.stats.batch_size == 2
    assert g.runner().sizes() == [2] and g.runner(TRANSLATION_ID).sizes() == []


async def test_generate_for_a_named_model_runs_on_that_model(
    make_gateway: Callable[..., Awaitable[FakeGateway]],
) -> None:
    g = await make_gateway()
    result = await served(g.runner(TRANSLATION_ID), g.gateway.generate(["a"], THREE, 60.0, model=TRANSLATION_ID))
    assert result.stats.model == TRANSLATION_ID and g.runner().sizes() == []
    assert isinstance(await refused(g.gateway.generate(["a"], THREE, 60.0, model="other")), NotReady)


async def test_translate_runs_on_the_translation_model(make_gateway: Callable[..., Awaitable[FakeGateway]]) -> None:
    g = await make_gateway()
    result = await served(g.runner(TRANSLATION_ID), g.gateway.translate(["one", "two"], "EN", "de-at", THREE, 60.0))
    assert (result.source_lang, result.target_lang) == ("en", "de-AT")
    assert len(result.outputs) == 2 and result.stats.model == TRANSLATION_ID
    assert g.runner(TRANSLATION_ID).sizes() == [2] and g.runner().sizes() == []


async def test_translate_refuses_bad_languages_and_too_many_segments(
    make_gateway: Callable[..., Awaitable[FakeGateway]],
) -> None:
    g = await make_gateway(max_translation_segments=2, translation_languages=["en", "de"])
    error = await refused(g.gateway.translate(["a"], "en", "fr", THREE, 60.0))
    assert isinstance(error, InvalidRequest) and "target_lang" in error.message and "'fr'" in error.message
    error = await refused(g.gateway.translate(["a"], "english", "de", THREE, 60.0))
    assert isinstance(error, InvalidRequest) and "source_lang" in error.message
    error = await refused(g.gateway.translate(["a", "b", "c"], "en", "de", THREE, 60.0))
    assert isinstance(error, InvalidRequest) and "at most 2 segments" in error.message
    assert g.runner(TRANSLATION_ID).sizes() == []  # refused before anything was queued


async def test_stream_of_one_prompt_is_the_services_stream(make_gateway: Callable[..., Awaitable[FakeGateway]]) -> None:
    g = await make_gateway()
    events = await served(g.runner(), collect(g.gateway.stream(["a"], THREE, 60.0)))
    assert events[0].admitted and [e.token.text for e in events[1:-1] if e.token] == ["<49>", "<50>", "<51>"]
    assert events[-1].final and events[-1].stats is not None and events[-1].stats.model == GENERATION_ID
    assert {e.index for e in events} == {0}


async def test_stream_of_several_prompts_merges_them_by_index(
    make_gateway: Callable[..., Awaitable[FakeGateway]],
) -> None:
    g = await make_gateway()
    events = await served(g.runner(TRANSLATION_ID), collect(g.gateway.stream(["a", "b"], THREE, 60.0, TRANSLATION_ID)))
    finals = {e.index: e.output.text for e in events if e.output is not None}
    assert finals == {0: "<49><50><51>", 1: "<50><51><52>"}
    for index in (0, 1):
        mine = [e for e in events if e.index == index]
        assert mine[0].admitted and mine[-1].final and len(mine) == 5
    assert g.runner(TRANSLATION_ID).sizes() == [2]  # admitted together: queued side by side, one group


async def collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


async def test_a_refused_stream_raises_before_yielding(make_gateway: Callable[..., Awaitable[FakeGateway]]) -> None:
    g = await make_gateway()
    g.gateway.begin_drain()
    for prompts in (["a"], ["a", "b"]):
        with pytest.raises(Draining):
            await anext(g.gateway.stream(prompts, THREE, 60.0))
    assert g.gateway.busy == 0


async def test_a_stream_whose_second_row_finds_no_room_gives_back_the_first(
    make_gateway: Callable[..., Awaitable[FakeGateway]],
) -> None:
    g = await make_gateway(max_queue=1, max_batch_size=1)
    running = asyncio.ensure_future(g.gateway.generate(["a"], THREE, 60.0))  # holds the decoder's one place
    await settle()
    queue = g.engine.services[GENERATION_ID].scheduler.queue
    with pytest.raises(QueueFull):
        await anext(g.gateway.stream(["b", "c"], THREE, 60.0))
    assert queue.depth == 0 and g.gateway.busy == 1  # the admitted row left the queue with the refusal
    await served(g.runner(), running)
    assert g.runner().sizes() == [1]


# -- names, timeouts, chat --


async def test_resolve_model(make_gateway: Callable[..., Awaitable[FakeGateway]]) -> None:
    g = await make_gateway()
    assert g.gateway.resolve_model(TRANSLATION_ID) == TRANSLATION_ID
    assert g.gateway.resolve_model("gpt-4o") == GENERATION_ID  # any other name: the generation model
    strict = await make_gateway(strict_model_names=True)
    assert strict.gateway.resolve_model(GENERATION_ID) == GENERATION_ID
    with pytest.raises(ModelNotFound) as caught:
        strict.gateway.resolve_model("gpt-4o")
    assert caught.value.status_code == 404 and "gpt-4o" in caught.value.message
    assert GENERATION_ID in caught.value.message  # it says what is served


def test_resolve_model_before_loading_knows_the_served_ids() -> None:
    g = FakeGateway(strict_model_names=True)
    assert g.gateway.resolve_model(TRANSLATION_ID) == TRANSLATION_ID


def test_timeout_for_is_the_default_or_the_request_within_the_bound() -> None:
    gateway = FakeGateway(request_timeout_s=30.0, max_request_timeout_s=120.0).gateway
    assert gateway.timeout_for(None) == 30.0
    assert gateway.timeout_for(5.0) == 5.0 and gateway.timeout_for(120.0) == 120.0
    with pytest.raises(InvalidRequest, match="<= 120"):
        gateway.timeout_for(120.5)


async def test_chat_prompt_needs_a_chat_template(make_gateway: Callable[..., Awaitable[FakeGateway]]) -> None:
    g = await make_gateway()
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    with pytest.raises(BadRequest) as caught:
        g.gateway.chat_prompt(GENERATION_ID, messages)
    assert caught.value.status_code == 400 and caught.value.param == "messages"
    g.runner().chat_template = True
    assert g.gateway.chat_prompt(GENERATION_ID, messages) == "system: be brief\nuser: hi\nassistant: "


# -- the fault switch --


def test_set_fault_takes_exactly_one_of_count_and_ratio() -> None:
    gateway = FakeGateway().gateway
    for count, ratio in ((None, None), (2, 0.5)):
        with pytest.raises(InvalidRequest, match="exactly one"):
            gateway.set_fault("error", count=count, ratio=ratio, seconds=1.0)
    assert gateway.engine.faults.describe() is None
    described = gateway.set_fault("oom", count=2, ratio=None, seconds=1.0)
    assert described == {"kind": "oom", "remaining": 2, "ratio": None, "seconds": 1.0, "injected": 0}
    described = gateway.set_fault("stall", count=None, ratio=0.25, seconds=3.0)
    assert described is not None and described["ratio"] == 0.25 and described["remaining"] is None
    gateway.clear_fault()
    assert gateway.engine.faults.describe() is None


# -- drain, abandon, busy --


async def test_drain_refuses_new_work_and_waits_for_what_runs(
    make_gateway: Callable[..., Awaitable[FakeGateway]],
) -> None:
    g = await make_gateway()
    task = asyncio.ensure_future(g.gateway.generate(["a"], THREE, 60.0))
    await settle()
    assert g.gateway.busy == 1
    g.gateway.begin_drain()
    assert not g.gateway.ready and g.gateway.components()["draining"] is True
    assert isinstance(await refused(g.gateway.generate(["b"], THREE, 60.0)), Draining)
    assert await g.gateway.drain(0.0) is False  # out of time with a request still running
    await served(g.runner(), task)  # in-flight work still finishes
    assert g.gateway.busy == 0 and await g.gateway.drain(5.0) is True


async def test_abandon_answers_queued_and_running_rows_with_503(
    make_gateway: Callable[..., Awaitable[FakeGateway]],
) -> None:
    g = await make_gateway(max_batch_size=1)
    running = asyncio.ensure_future(g.gateway.generate(["a"], THREE, 60.0))
    queued = asyncio.ensure_future(g.gateway.generate(["b", "c"], THREE, 60.0))
    await settle()
    assert g.gateway.busy == 2 and g.engine.services[GENERATION_ID].scheduler.queue.depth == 2
    assert g.gateway.abandon() == 3
    for task in (running, queued):
        error = await refused(task)
        assert isinstance(error, Draining) and error.status_code == 503 and error.retry_after == 5.0
    assert g.gateway.busy == 0
    g.runner().step()
    assert g.runner().running_rows == []  # told to stop


async def test_close_stops_the_schedulers_and_closes_the_runners() -> None:
    g = FakeGateway()
    await g.gateway.start()
    await g.gateway.close()
    assert all(r.closed for r in g.runners.by_model.values())
    assert not g.gateway.ready and not any(s.started for s in g.engine.services.values())


# -- state --


async def test_refusal_is_the_full_queue_of_that_roles_model(
    make_gateway: Callable[..., Awaitable[FakeGateway]],
) -> None:
    g = await make_gateway(max_queue=2)
    assert g.gateway.refusal(ModelRole.GENERATION) is None
    queue = g.engine.services[GENERATION_ID].scheduler.queue
    queue.reserve(2)
    refusal = g.gateway.refusal(ModelRole.GENERATION)
    assert isinstance(refusal, QueueFull) and refusal.status_code == 429
    assert g.gateway.refusal(ModelRole.TRANSLATION) is None  # another model, another queue
    g.gateway.begin_drain()
    assert g.gateway.refusal(ModelRole.GENERATION) is None  # draining: the route answers 503 as before
    queue.release(2)


async def test_info_describes_models_limits_and_batching(make_gateway: Callable[..., Awaitable[FakeGateway]]) -> None:
    g = await make_gateway(max_input_tokens=100, max_batch_size=3, max_queue=7, translation_languages=["en", "de"])
    info = g.gateway.info()
    assert set(info) == {
        "version",
        "model_id",
        "model_dtype",
        "model_device_type",
        "translation_model_id",
        "state",
        "demo_models",
        "notice",
        "models",
        "limits",
        "batching",
    }
    assert info["model_id"] == GENERATION_ID and info["translation_model_id"] == TRANSLATION_ID
    assert info["state"] == "loaded" and info["demo_models"] is False and info["notice"] is None
    assert info["model_dtype"] == "float32" and info["model_device_type"] == "cpu"
    generation, translation = info["models"]
    assert generation["model_id"] == GENERATION_ID and generation["languages"] is None
    assert translation["languages"] == ["en", "de"] and translation["translation_style"] == "template"
    assert info["limits"]["max_input_tokens"] == 100
    assert set(info["limits"]) == {
        "max_input_tokens",
        "max_new_tokens",
        "default_max_new_tokens",
        "max_body_bytes",
        "max_translation_segments",
        "request_timeout_s",
        "max_request_timeout_s",
    }
    assert info["batching"] == {"max_batch_size": 3, "max_batch_wait_ms": 0.0, "max_queue": 7, "model_process": False}


def test_info_before_loading() -> None:
    info = FakeGateway().gateway.info()
    assert info["state"] == "loading" and info["models"] == [] and info["model_dtype"] is None


async def test_components_snapshots_and_pids(make_gateway: Callable[..., Awaitable[FakeGateway]]) -> None:
    g = await make_gateway()
    components = g.gateway.components()
    assert components["models"] == "loaded" and components["draining"] is False
    assert components[GENERATION_ID] == {"loaded": True, "workers_alive": 1, "circuit_breaker": "closed"}
    snapshots = {s.model: s for s in g.gateway.snapshots()}
    assert set(snapshots) == {GENERATION_ID, TRANSLATION_ID} and snapshots[GENERATION_ID].queue_capacity == 4
    assert g.gateway.model_pids() == {GENERATION_ID: os.getpid(), TRANSLATION_ID: os.getpid()}  # thread mode
    assert g.gateway.torch_memory() == []
