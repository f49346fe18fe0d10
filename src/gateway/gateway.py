"""The facade: what every protocol adapter (TGI's routes, ``/translate``, next the OpenAI API) and the CLI use.

Nothing above it knows the engine, the services, the schedulers or the runners. A request goes in as a prompt
(or segments) with domain ``GenerationParams`` and a timeout; it comes back as a ``Generation`` (outputs and the
``RequestStats`` measured on the way) or, streamed, as ``StreamEvent``s, the last one carrying the output and
the stats. Every finished answer is assessed for output quality (``gateway.quality``: flags, a score, the
model's rolling score) into ``stats.quality``, except the canary's; quality never moves the breaker or readiness.
Every failure is a ``GatewayError`` (``gateway.errors``); the HTTP layer maps it to a status.

    adapter (http/) --generate/stream/translate--> Gateway --> ModelService (admission, breaker, queue)
                                                                 --> ModelScheduler (feeder) --> runner
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from gateway import __version__
from gateway.engine import DEMO_NOTICE, Engine, LoadState
from gateway.errors import BadRequest, Draining, GatewayError, InvalidRequest, ModelNotFound, NotReady
from gateway.keys import ApiKey
from gateway.languages import LANGUAGE_NAMES
from gateway.quality import OutputSample, QualityMonitor, Segment
from gateway.ratelimit import RateLimiter
from gateway.runners.faults import FaultPlan
from gateway.service import Generation, ModelService, StreamEvent, TokenBudget
from gateway.settings import Settings
from gateway.stats import GaugeSnapshot, RequestStats
from gateway.streams import merge_streams
from gateway.translation import Translator
from gateway.types import GenerationOutput, GenerationParams, ModelInfo

__all__ = ["Gateway", "Generation", "ModelRole", "StreamEvent", "Translation"]


class ModelRole(enum.StrEnum):
    """Which of the served models a route uses."""

    GENERATION = "generation"
    TRANSLATION = "translation"


@dataclass
class Translation:
    """The translated segments (in order), the normalized language tags, and what serving them measured."""

    outputs: list[GenerationOutput]
    stats: RequestStats
    source_lang: str
    target_lang: str


class Gateway:
    """Generate, stream and translate; the load-shedding refusal; readiness, info, drain and the fault switch.

    Each serving call takes the caller's ``key`` (None: no keys configured): its limits (``RateLimiter``) hold for
    the whole request, the token limit at admission, once the prompt is tokenized.
    """

    def __init__(self, engine: Engine, limiter: RateLimiter | None = None) -> None:
        self.engine = engine
        self.settings: Settings = engine.settings
        s = self.settings
        self.quality: QualityMonitor | None = None
        if s.quality_enabled:
            self.quality = QualityMonitor.build(
                window=s.quality_window,
                threshold=s.quality_threshold,
                langid_rate=s.quality_langid_rate,
                languages=s.translation_languages or LANGUAGE_NAMES.keys(),
            )
        self.limiter = limiter

    # -- serving --

    async def generate(
        self,
        prompts: Sequence[str],
        params: GenerationParams,
        timeout_s: float,
        model: str | None = None,
        key: ApiKey | None = None,
        *,
        evaluate: bool = True,
    ) -> Generation:
        """The rows of one request (one per prompt), admitted and answered together; outputs in prompt order.

        ``model``: a served model id (``resolve_model``); None: the generation model. ``evaluate``: assess the
        answers' quality into ``stats.quality`` (off for the canary's requests).
        """
        service = self._service(model)
        async with self._limits(key) as budget:
            result = await service.generate(prompts, [params] * len(prompts), timeout_s, budget=budget)
        if evaluate:
            await self._assess(result.stats, [_segment(o) for o in result.outputs])
        return result

    def stream(
        self,
        prompts: Sequence[str],
        params: GenerationParams,
        timeout_s: float,
        model: str | None = None,
        key: ApiKey | None = None,
        *,
        evaluate: bool = True,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Each row's admission, its tokens as they are chosen, then its output with its stats
        (``StreamEvent.index``: the row). Admission runs on the first step, so a refusal is raised before anything
        is yielded."""
        service = self._service(model)

        def open_rows(budget: TokenBudget | None) -> AsyncGenerator[StreamEvent, None]:
            streams = [service.stream(prompt, params, timeout_s, budget) for prompt in prompts]
            return streams[0] if len(streams) == 1 else merge_streams(streams)

        events = open_rows(None) if self.limiter is None or key is None else self._limited_stream(key, open_rows)
        return self._assessed(events) if evaluate and self.quality is not None else events

    async def _assessed(self, events: AsyncGenerator[StreamEvent, None]) -> AsyncGenerator[StreamEvent, None]:
        """The stream, each row's final event assessed (its stats' ``quality``) before it goes out."""
        try:
            async for event in events:
                if event.output is not None and event.stats is not None:
                    await self._assess(event.stats, [_segment(event.output)])
                yield event
        finally:
            await events.aclose()

    async def _assess(
        self,
        stats: RequestStats,
        segments: list[Segment],
        source_lang: str | None = None,
        target_lang: str | None = None,
    ) -> None:
        if self.quality is not None:
            sample = OutputSample(stats.model, segments, source_lang, target_lang)
            stats.quality = await self.quality.assess(sample)

    def resolve_model(self, name: str) -> str:
        """The served model a client names: a served id selects that model; any other name the generation model,
        unless ``strict_model_names`` (then a 404 ``model_not_found``)."""
        if name in self.engine.services or name in self.served_models():
            return name
        if self.settings.strict_model_names:
            raise ModelNotFound(f"the model {name!r} does not exist; served: {', '.join(self.served_models())}")
        return self.engine.generation_model_id

    def served_models(self) -> list[str]:
        """The ids of the served models, the generation model first."""
        return list(dict.fromkeys(self.engine.model_ids))

    def check_logit_bias(self, model: str, token_ids: Sequence[int]) -> None:
        """A 400 naming ``logit_bias`` for a token id outside the model's vocabulary."""
        size = self._service(model).runner.vocab_size
        bad = [i for i in token_ids if not 0 <= i < size]
        if bad:
            raise BadRequest(
                f"logit_bias: token id {bad[0]} is not in the vocabulary (0 to {size - 1})", param="logit_bias"
            )

    def chat_prompt(self, model: str, messages: Sequence[dict[str, str]]) -> str:
        """A conversation rendered through the model's chat template (a 400 when it has none)."""
        prompt = self._service(model).runner.render_messages(messages)
        if prompt is None:
            raise BadRequest(f"the model {model!r} has no chat template; use /v1/completions", param="messages")
        return prompt

    async def translate(
        self,
        segments: Sequence[str],
        source_lang: str,
        target_lang: str,
        params: GenerationParams,
        timeout_s: float,
        key: ApiKey | None = None,
        *,
        evaluate: bool = True,
    ) -> Translation:
        """Translate segments as rows of one request; an unsupported language is a 422 naming it."""
        if len(segments) > self.settings.max_translation_segments:
            raise InvalidRequest(f"text: at most {self.settings.max_translation_segments} segments")
        translator = self._translator()
        source, target = translator.check_languages(source_lang, target_lang)
        async with self._limits(key) as budget:
            result = await translator.translate(segments, source, target, params, timeout_s, budget)
        if evaluate:
            parts = [_segment(o, text) for text, o in zip(segments, result.outputs, strict=True)]
            await self._assess(result.stats, parts, source, target)
        return Translation(result.outputs, result.stats, source, target)

    def timeout_for(self, requested: float | None) -> float:
        """The deadline of a request: the default, or the one it asked for within the configured bound."""
        if requested is None:
            return self.settings.request_timeout_s
        if requested > self.settings.max_request_timeout_s:
            raise InvalidRequest(f"parameters.timeout_s: must be <= {self.settings.max_request_timeout_s}")
        return requested

    def model_id(self, role: ModelRole) -> str:
        """The id of the model serving ``role`` (known before anything is loaded)."""
        if role is ModelRole.TRANSLATION:
            return self.engine.translation_model_id
        return self.engine.generation_model_id

    def refusal(self, role: ModelRole) -> GatewayError | None:
        """The 429 a new request for ``role`` would get whatever its body (a full queue), or None."""
        return self.engine.refusal(self.model_id(role))

    # -- state --

    @property
    def loaded(self) -> bool:
        return self.engine.state is LoadState.LOADED

    @property
    def ready(self) -> bool:
        return self.engine.ready

    def components(self) -> dict[str, object]:
        """Each component of readiness and its state (``/ready``'s body)."""
        return self.engine.components()

    def snapshots(self) -> list[GaugeSnapshot]:
        return self.engine.snapshots()

    def model_infos(self) -> list[ModelInfo]:
        return self.engine.model_infos()

    def model_state(self, model: str) -> str:
        """One model's state for people (``/status``): loading, failed, draining, ready, or not_ready (breaker
        open or no live worker)."""
        if self.engine.state is not LoadState.LOADED:
            return self.engine.state.value
        service = self.engine.services.get(model)
        if service is None:
            return "unknown"
        if self.engine.lifecycle.draining:
            return "draining"
        return "ready" if service.ready else "not_ready"

    def torch_memory(self) -> list[tuple[str, float, float]]:
        return self.engine.torch_memory()

    def quality_score(self, model: str) -> float | None:
        """The model's rolling output-quality score; None with quality off or before any answer."""
        return None if self.quality is None else self.quality.scores.mean(model)

    def model_pids(self) -> dict[str, int | None]:
        """The process id running each model's decode loop (the model process, or this one)."""
        return self.engine.model_pids()

    def info(self) -> dict[str, Any]:
        """Models, limits and batching settings (``/info``)."""
        engine, s = self.engine, self.settings
        models = [_model_json(i) for i in engine.model_infos()]
        gen = next((m for m in models if m["model_id"] == engine.generation_model_id), None)
        return {
            "version": __version__,
            "model_id": engine.generation_model_id,
            "model_dtype": gen["dtype"] if gen else None,
            "model_device_type": str(gen["device"]).split(":")[0] if gen else None,
            "translation_model_id": engine.translation_model_id,
            "state": engine.state.value,
            "demo_models": engine.is_demo,
            "notice": DEMO_NOTICE if engine.is_demo else None,
            "models": models,
            "limits": {
                "max_input_tokens": s.max_input_tokens,
                "max_new_tokens": s.max_new_tokens_limit,
                "default_max_new_tokens": s.default_max_new_tokens,
                "max_body_bytes": s.max_body_bytes,
                "max_translation_segments": s.max_translation_segments,
                "request_timeout_s": s.request_timeout_s,
                "max_request_timeout_s": s.max_request_timeout_s,
            },
            "batching": {
                "max_batch_size": s.max_batch_size,
                "max_batch_wait_ms": s.max_batch_wait_ms,
                "max_queue": s.max_queue,
                "model_process": s.model_process,
            },
        }

    # -- lifecycle --

    async def start(self) -> None:
        await self.engine.start()
        if self.quality is not None:
            await asyncio.to_thread(self.quality.load)  # after the models: readiness does not wait for it

    async def close(self) -> None:
        await self.engine.close()

    def begin_drain(self) -> None:
        """Stop admitting: ``/ready`` turns 503 and new requests get 503 ``draining``."""
        self.engine.begin_drain()

    @property
    def busy(self) -> int:
        """Requests admitted and not yet answered."""
        return self.engine.busy

    async def drain(self, timeout_s: float) -> bool:
        """Wait for in-flight work, up to ``timeout_s``; True when everything finished."""
        return await self.engine.drain(timeout_s)

    def abandon(self) -> int:
        """Answer every queued and running row with 503 now (a drain out of time); how many rows that was."""
        return sum(s.scheduler.abandon(Draining(retry_after=5.0)) for s in self.engine.services.values())

    # -- fault switch --

    def set_fault(
        self, kind: str, *, count: int | None, ratio: float | None, seconds: float, output: str = "repeat"
    ) -> dict[str, object] | None:
        """Make the runners fail the next ``count`` submissions (or a ``ratio`` of them) that way (``degrade``:
        answer with degenerate ``output``, ``repeat`` or ``empty``)."""
        if (count is None) == (ratio is None):
            raise InvalidRequest("give exactly one of count and ratio")
        self.engine.faults.set(FaultPlan(kind=kind, count=count, ratio=ratio, seconds=seconds, output=output))
        return self.engine.faults.describe()

    def clear_fault(self) -> None:
        self.engine.faults.clear()

    # -- internals --

    def _limits(self, key: ApiKey | None) -> AbstractAsyncContextManager[TokenBudget | None]:
        if self.limiter is None or key is None:
            return contextlib.nullcontext(None)
        return self.limiter.request(key)

    async def _limited_stream(
        self, key: ApiKey, open_rows: Callable[[TokenBudget | None], AsyncGenerator[StreamEvent, None]]
    ) -> AsyncGenerator[StreamEvent, None]:
        """The rows' stream inside the key's limits: its concurrent slot is held until the stream is closed."""
        async with self._limits(key) as budget:
            events = open_rows(budget)
            try:
                async for event in events:
                    yield event
            finally:
                await events.aclose()

    def _service(self, model: str | None) -> ModelService:
        service = self.engine.services.get(model or self.engine.generation_model_id)
        if service is None:
            raise NotReady(retry_after=5.0)
        return service

    def _translator(self) -> Translator:
        if self.engine.translator is None:
            raise NotReady(retry_after=5.0)
        return self.engine.translator


def _segment(output: GenerationOutput, source: str | None = None) -> Segment:
    return Segment(output.text, [t.id for t in output.tokens], output.finish_reason.value, source)


def _model_json(info: ModelInfo) -> dict[str, Any]:
    return {
        "model_id": info.model_id,
        "revision": info.revision,
        "task": info.task,
        "device": info.device,
        "dtype": info.dtype,
        "demo": info.is_demo,
        "continuous_batching": info.continuous_batching,
        "languages": list(info.languages) or None,
        "translation_style": info.translation_style,
    }
