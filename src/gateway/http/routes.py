"""Routes: validate, hand off to the engine's services, and shape the answer (JSON or SSE)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar, cast

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from gateway import __version__
from gateway.engine import DEMO_NOTICE, Engine
from gateway.errors import GatewayError, InvalidRequest, NotReady, RequestCancelled, Unauthorized
from gateway.http.auth import key_matches
from gateway.http.body_route import json_body_route
from gateway.http.errors import note_error
from gateway.http.responses import JSONResponse, dumps
from gateway.http.schemas import (
    CompatRequest,
    FaultRequest,
    GenerateParameters,
    GenerateRequest,
    TranslateRequest,
    generate_json,
    stream_final_json,
    stream_token_json,
)
from gateway.runners.faults import FaultPlan
from gateway.service import ModelService
from gateway.settings import Settings
from gateway.stats import RequestRecord
from gateway.types import GenerationOutput, GenerationParams, Token

T = TypeVar("T")


def engine_of(request: Request) -> Engine:
    return cast(Engine, request.app.state.engine)


def settings_of(request: Request) -> Settings:
    return engine_of(request).settings


def record_of(request: Request) -> RequestRecord:
    record = getattr(request.state, "record", None)
    if record is None:  # only when the middleware is bypassed
        record = RequestRecord(request_id="", route=request.url.path)
        request.state.record = record
    return cast(RequestRecord, record)


async def require_api_key(request: Request) -> None:
    headers = request.headers
    if not key_matches(settings_of(request).api_key, headers.get("authorization", ""), headers.get("x-api-key", "")):
        raise Unauthorized()


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; if the client disconnects first, cancel it (its rows are dropped) and answer 499.

    ``work`` runs in this task, so its synchronous start (admission: a full queue's 429) happens at once, in the
    same turn of the event loop as the request's parsing; a watcher task cancels this one on a disconnect.
    """
    current = asyncio.current_task()
    assert current is not None
    disconnected = False

    async def watch() -> None:
        nonlocal disconnected
        while (await request.receive())["type"] != "http.disconnect":
            pass
        disconnected = True
        current.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not disconnected:
            raise
        current.uncancel()  # the cancellation was ours: this request goes on to answer 499
        raise RequestCancelled() from None
    finally:
        watcher.cancel()


def _timeout(settings: Settings, requested: float | None) -> float:
    if requested is None:
        return settings.request_timeout_s
    if requested > settings.max_request_timeout_s:
        raise InvalidRequest(f"parameters.timeout_s: must be <= {settings.max_request_timeout_s}")
    return requested


def _domain(settings: Settings, params: GenerateParameters) -> GenerationParams:
    return params.to_domain(
        default_max_new_tokens=settings.default_max_new_tokens,
        max_new_tokens_limit=settings.max_new_tokens_limit,
        max_stop=settings.max_stop_sequences,
    )


def _generation_service(engine: Engine) -> ModelService:
    if engine.generation is None:
        raise NotReady(retry_after=5.0)
    return engine.generation


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data:" + dumps(payload) + b"\n\n"


router = APIRouter()
# The inference routes parse their body in one step (``JSONBodyRoute``), the API-key check first.
inference = APIRouter(route_class=json_body_route(require_api_key))


async def _generate(request: Request, body: GenerateRequest) -> dict[str, Any]:
    engine, settings, record = engine_of(request), settings_of(request), record_of(request)
    params = _domain(settings, body.parameters)
    timeout_s = _timeout(settings, body.parameters.timeout_s)
    service = _generation_service(engine)
    output = await until_disconnect(request, service.generate(body.inputs, params, timeout_s, record))
    prefix = body.inputs if body.parameters.return_full_text else ""
    if settings.log_payloads:
        record.payload = {"inputs": body.inputs, "output": output.text}
    return generate_json(output, details=bool(body.parameters.details), prefix=prefix)


async def _stream(request: Request, body: GenerateRequest) -> StreamingResponse:
    engine, settings, record = engine_of(request), settings_of(request), record_of(request)
    params = _domain(settings, body.parameters)
    timeout_s = _timeout(settings, body.parameters.timeout_s)
    service = _generation_service(engine)
    record.streamed = True
    events = service.stream(body.inputs, params, timeout_s, record)
    # Admission errors (429, 503, 413) must be real statuses, so the first step runs before the 200 goes out.
    first = await events.__anext__()
    prefix = body.inputs if body.parameters.return_full_text else ""

    async def body_iter() -> AsyncIterator[bytes]:
        index = 0
        held: Token | None = None
        try:
            event: Token | GenerationOutput | None = first
            while event is not None:
                if isinstance(event, Token):
                    if held is not None:
                        yield _sse(stream_token_json(index, held))
                        index += 1
                    held = event
                else:
                    last = held or Token(id=-1, text="", logprob=None, special=True)
                    yield _sse(stream_final_json(index, last, event, prefix))
                    if settings.log_payloads:
                        record.payload = {"inputs": body.inputs, "output": event.text}
                    return
                event = await anext(events, None)
        except GatewayError as exc:
            note_error(record, exc)
            if held is not None:  # chosen before the failure: the client gets it before the error
                yield _sse(stream_token_json(index, held))
            yield _sse({"error": exc.message, "error_type": exc.error_type})
        finally:
            await events.aclose()

    return StreamingResponse(body_iter(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@inference.post("/generate")
async def generate(request: Request, body: GenerateRequest) -> JSONResponse:
    """Text generation, TGI's request and response shape."""
    return JSONResponse(await _generate(request, body))


@inference.post("/generate_stream", response_model=None)
async def generate_stream(request: Request, body: GenerateRequest) -> StreamingResponse:
    """Text generation streamed as Server-Sent Events in TGI's format."""
    return await _stream(request, body)


@inference.post("/", response_model=None)
async def compat(request: Request, body: CompatRequest) -> Response:
    """TGI's compatibility route used by ``text-generation`` and ``InferenceClient``."""
    if body.stream:
        return await _stream(request, body)
    return JSONResponse([await _generate(request, body)])


@inference.post("/translate")
async def translate(request: Request, body: TranslateRequest) -> JSONResponse:
    """Translate one segment or a list of segments."""
    engine, settings, record = engine_of(request), settings_of(request), record_of(request)
    record.source_lang, record.target_lang = body.source_lang, body.target_lang
    segments = [body.text] if isinstance(body.text, str) else list(body.text)
    if len(segments) > settings.max_translation_segments:
        raise InvalidRequest(f"text: at most {settings.max_translation_segments} segments")
    params = _domain(settings, body.parameters.as_generate())
    timeout_s = _timeout(settings, body.parameters.timeout_s)
    translator = engine.translator
    if translator is None:
        raise NotReady(retry_after=5.0)
    source, target = translator.check_languages(body.source_lang, body.target_lang)
    record.source_lang, record.target_lang = source, target
    outputs = await until_disconnect(request, translator.translate(segments, source, target, params, timeout_s, record))
    texts = [o.text for o in outputs]
    if settings.log_payloads:
        record.payload = {"inputs": segments, "output": texts}
    return JSONResponse(
        {
            "translation": texts[0] if isinstance(body.text, str) else texts,
            "source_lang": source,
            "target_lang": target,
            "details": {
                "model": translator.service.name,
                "finish_reason": record.finish_reason,
                "prompt_tokens": record.prompt_tokens,
                "generated_tokens": record.generated_tokens,
                "segments": [
                    {"finish_reason": o.finish_reason.value, "generated_tokens": o.generated_tokens} for o in outputs
                ],
            },
        }
    )


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Readiness: models loaded, workers alive, no breaker open, not draining."""
    engine = engine_of(request)
    ok = engine.ready
    body = {"status": "ready" if ok else "not_ready", "components": engine.components()}
    return JSONResponse(body, status_code=200 if ok else 503, headers={} if ok else {"Retry-After": "5"})


@router.get("/info")
async def info(request: Request) -> dict[str, Any]:
    """Models, limits and batching settings."""
    engine, s = engine_of(request), settings_of(request)
    models = [
        {
            "model_id": i.model_id,
            "revision": i.revision,
            "task": i.task,
            "device": i.device,
            "dtype": i.dtype,
            "demo": i.is_demo,
            "continuous_batching": i.continuous_batching,
            "languages": list(i.languages) or None,
            "translation_style": i.translation_style,
        }
        for i in engine.model_infos()
    ]
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


faults = APIRouter(prefix="/admin/faults", dependencies=[Depends(require_api_key)])


@faults.post("")
async def set_fault(request: Request, body: FaultRequest) -> dict[str, Any]:
    """Make the model runners fail the next N batches (or a fraction of them)."""
    if (body.count is None) == (body.ratio is None):
        raise InvalidRequest("give exactly one of count and ratio")
    injector = engine_of(request).faults
    injector.set(
        FaultPlan(kind=body.kind, count=body.count, ratio=body.ratio, seconds=body.seconds, output=body.output)
    )
    return {"fault": injector.describe()}


@faults.delete("")
async def clear_fault(request: Request) -> dict[str, Any]:
    engine_of(request).faults.clear()
    return {"fault": None}


def install_routes(app: FastAPI, *, enable_faults: bool) -> None:
    app.include_router(router)
    app.include_router(inference)
    if enable_faults:
        app.include_router(faults)
