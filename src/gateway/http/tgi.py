"""The TGI adapter: ``/generate``, ``/generate_stream``, TGI's ``POST /``, and ``/translate``.

Each route validates its body (``JSONBodyRoute``), turns it into domain parameters, calls the facade, copies the
returned stats into the access-log record, and shapes the answer (JSON, or SSE in TGI's event format).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse
from starlette.requests import Request

from gateway.errors import GatewayError
from gateway.gateway import Gateway, StreamEvent
from gateway.http.body_route import JSONBodyRoute
from gateway.http.disconnect import until_disconnect
from gateway.http.errors import note_error
from gateway.http.keys import api_key_of
from gateway.http.openapi import (
    INFERENCE,
    EventStreamResponse,
    GenerateResponse,
    TranslateResponse,
    responses,
)
from gateway.http.responses import JSONResponse, dumps
from gateway.http.schemas import (
    CompatRequest,
    GenerateParameters,
    GenerateRequest,
    TranslateRequest,
    generate_json,
    stream_final_json,
    stream_token_json,
)
from gateway.settings import Settings
from gateway.stats import RequestRecord
from gateway.types import GenerationParams, Token


def record_of(request: Request) -> RequestRecord:
    """The access-log record the request context made for this request."""
    record = getattr(request.state, "record", None)
    if record is None:  # only when the middleware is bypassed
        record = RequestRecord(request_id="", route=request.url.path)
        request.state.record = record
    assert isinstance(record, RequestRecord)
    return record


def domain_params(settings: Settings, params: GenerateParameters) -> GenerationParams:
    return params.to_domain(
        default_max_new_tokens=settings.default_max_new_tokens,
        max_new_tokens_limit=settings.max_new_tokens_limit,
        max_stop=settings.max_stop_sequences,
    )


def sse(payload: dict[str, Any]) -> bytes:
    return b"data:" + dumps(payload) + b"\n\n"


def tgi_router(gateway: Gateway) -> APIRouter:
    """TGI's routes and ``/translate`` over ``gateway``."""
    router = APIRouter(route_class=JSONBodyRoute)

    @router.post("/generate", response_model=None, responses=responses(INFERENCE, GenerateResponse))
    async def generate(request: Request, body: GenerateRequest) -> JSONResponse:
        """Text generation, TGI's request and response shape."""
        return JSONResponse(await generate_answer(gateway, request, body))

    @router.post(
        "/generate_stream",
        response_model=None,
        response_class=EventStreamResponse,
        responses=responses(INFERENCE, stream="only"),
    )
    async def generate_stream(request: Request, body: GenerateRequest) -> StreamingResponse:
        """Text generation streamed as Server-Sent Events in TGI's format."""
        return await stream_answer(gateway, request, body)

    compat_ok = {"type": "array", "items": {"$ref": "#/components/schemas/GenerateResponse"}}

    @router.post("/", response_model=None, responses=responses(INFERENCE, compat_ok, stream="also"))
    async def compat(request: Request, body: CompatRequest) -> Response:
        """TGI's compatibility route used by ``text-generation`` and ``InferenceClient``."""
        if body.stream:
            return await stream_answer(gateway, request, body)
        return JSONResponse([await generate_answer(gateway, request, body)])

    @router.post("/translate", response_model=None, responses=responses(INFERENCE, TranslateResponse))
    async def translate(request: Request, body: TranslateRequest) -> JSONResponse:
        """Translate one segment or a list of segments."""
        return JSONResponse(await translate_answer(gateway, request, body))

    return router


async def generate_answer(gateway: Gateway, request: Request, body: GenerateRequest) -> dict[str, Any]:
    record = record_of(request)
    params = domain_params(gateway.settings, body.parameters)
    timeout_s = gateway.timeout_for(body.parameters.timeout_s)
    result = await until_disconnect(
        request, gateway.generate([body.inputs], params, timeout_s, key=api_key_of(request))
    )
    record.add(result.stats)
    output = result.outputs[0]
    if gateway.settings.log_payloads:
        record.payload = {"inputs": body.inputs, "output": output.text}
    prefix = body.inputs if body.parameters.return_full_text else ""
    return generate_json(output, details=bool(body.parameters.details), prefix=prefix)


async def stream_answer(gateway: Gateway, request: Request, body: GenerateRequest) -> StreamingResponse:
    record = record_of(request)
    params = domain_params(gateway.settings, body.parameters)
    timeout_s = gateway.timeout_for(body.parameters.timeout_s)
    record.streamed = True
    events = gateway.stream([body.inputs], params, timeout_s, key=api_key_of(request))
    # Admission errors (429, 503, 413), and a deadline passed before the first token, must be real statuses: the
    # stream starts with its first token.
    first = await anext(events)
    if first.admitted:
        first = await anext(events)
    prefix = body.inputs if body.parameters.return_full_text else ""
    logged_inputs = body.inputs if gateway.settings.log_payloads else None
    return StreamingResponse(
        tgi_events(first, events, record, prefix, logged_inputs),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def translate_answer(gateway: Gateway, request: Request, body: TranslateRequest) -> dict[str, Any]:
    record = record_of(request)
    record.source_lang, record.target_lang = body.source_lang, body.target_lang
    segments = [body.text] if isinstance(body.text, str) else list(body.text)
    params = domain_params(gateway.settings, body.parameters.as_generate())
    timeout_s = gateway.timeout_for(body.parameters.timeout_s)
    work = gateway.translate(segments, body.source_lang, body.target_lang, params, timeout_s, api_key_of(request))
    result = await until_disconnect(request, work)
    record.add(result.stats)
    record.source_lang, record.target_lang = result.source_lang, result.target_lang
    texts = [o.text for o in result.outputs]
    if gateway.settings.log_payloads:
        record.payload = {"inputs": segments, "output": texts}
    stats = result.stats
    return {
        "translation": texts[0] if isinstance(body.text, str) else texts,
        "source_lang": result.source_lang,
        "target_lang": result.target_lang,
        "details": {
            "model": stats.model,
            "finish_reason": stats.finish_reason,
            "prompt_tokens": stats.prompt_tokens,
            "generated_tokens": stats.generated_tokens,
            "segments": [
                {"finish_reason": o.finish_reason.value, "generated_tokens": o.generated_tokens} for o in result.outputs
            ],
        },
    }


async def tgi_events(
    first: StreamEvent,
    events: AsyncIterator[StreamEvent],
    record: RequestRecord,
    prefix: str,
    logged_inputs: str | None,
) -> AsyncIterator[bytes]:
    """TGI's SSE events: each token one step late (the last one rides with the final event), or an error event.

    A stream that fails after it started ends with ``{"error", "error_type"}`` (after the token it was holding).
    """
    index = 0
    held: Token | None = None
    try:
        event: StreamEvent | None = first
        while event is not None:
            if event.token is not None:
                if held is not None:
                    yield sse(stream_token_json(index, held))
                    index += 1
                held = event.token
            elif event.output is not None and event.stats is not None:
                record.add(event.stats)
                last = held or Token(id=-1, text="", logprob=None, special=True)
                yield sse(stream_final_json(index, last, event.output, prefix))
                if logged_inputs is not None:
                    record.payload = {"inputs": logged_inputs, "output": event.output.text}
                return
            event = await anext(events, None)
    except GatewayError as exc:
        note_error(record, exc)
        if held is not None:  # chosen before the failure: the client gets it before the error
            yield sse(stream_token_json(index, held))
        yield sse({"error": exc.message, "error_type": exc.error_type})
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
