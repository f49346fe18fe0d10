"""The OpenAI adapter's routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``.

Same path as TGI's routes below the facade (admission, breaker, queue, batch, metrics, one log line); only the
shapes differ. Each route resolves the model, turns the body into domain parameters (``serving``), calls the
facade, copies the stats into the access-log record and answers JSON or a stream (``streaming``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.requests import Request

from gateway.gateway import Gateway, StreamEvent
from gateway.http.body_route import JSONBodyRoute
from gateway.http.disconnect import until_disconnect
from gateway.http.keys import api_key_of
from gateway.http.openai.protocol import ChatCompletionRequest, CompletionRequest
from gateway.http.openai.serving import (
    chat_messages,
    params_for,
    response,
    wants_logprobs,
)
from gateway.http.openai.streaming import StreamShape, openai_events
from gateway.http.openapi import ANY_ROUTE, OPENAI_INFERENCE, ChatCompletion, Completion, ModelList, responses
from gateway.http.responses import JSONResponse
from gateway.http.tgi import record_of
from gateway.types import GenerationParams

_SSE_HEADERS = {"Cache-Control": "no-cache"}


def openai_router(gateway: Gateway) -> APIRouter:
    """The ``/v1`` routes over ``gateway``."""
    router = APIRouter(prefix="/v1")
    router.include_router(_models_router(gateway))
    completions = APIRouter(route_class=JSONBodyRoute)

    @completions.post(
        "/chat/completions",
        response_model=None,
        responses=responses(OPENAI_INFERENCE, ChatCompletion, openai=True, stream="also"),
    )
    async def chat(request: Request, body: ChatCompletionRequest) -> JSONResponse | StreamingResponse:
        """Chat completions: ``messages`` through the model's chat template, plain or streamed."""
        model, params = _resolve(gateway, request, body)
        prompt = gateway.chat_prompt(model, chat_messages(body))
        return await _answer(gateway, request, body, model, [prompt] * body.n, params, chat=True)

    @completions.post(
        "/completions",
        response_model=None,
        responses=responses(OPENAI_INFERENCE, Completion, openai=True, stream="also"),
    )
    async def completion(request: Request, body: CompletionRequest) -> JSONResponse | StreamingResponse:
        """Text completions of a prompt or a list of prompts, plain or streamed."""
        model, params = _resolve(gateway, request, body)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        rows = [p for p in prompts for _ in range(body.n)]
        return await _answer(gateway, request, body, model, rows, params, chat=False)

    router.include_router(completions)
    return router


def _models_router(gateway: Gateway) -> APIRouter:
    router = APIRouter()
    created = int(time.time())

    @router.get("/models", response_model=None, responses=responses((*ANY_ROUTE, 401), ModelList, openai=True))
    async def models() -> dict[str, Any]:
        """The served models, OpenAI's list shape."""
        ids = gateway.served_models()
        data = [{"id": m, "object": "model", "created": created, "owned_by": "llm-gateway"} for m in ids]
        return {"object": "list", "data": data}

    return router


def _resolve(
    gateway: Gateway, request: Request, body: ChatCompletionRequest | CompletionRequest
) -> tuple[str, GenerationParams]:
    """The model the body names (into the access-log record) and the domain parameters, checked against it."""
    model = gateway.resolve_model(body.model)
    record_of(request).model = model
    params = params_for(body, gateway.settings)
    gateway.check_logit_bias(model, [token for token, _ in params.sampling.logit_bias])
    return model, params


async def _answer(
    gateway: Gateway,
    request: Request,
    body: ChatCompletionRequest | CompletionRequest,
    model: str,
    rows: Sequence[str],
    params: GenerationParams,
    *,
    chat: bool,
) -> JSONResponse | StreamingResponse:
    record = record_of(request)
    timeout_s = gateway.timeout_for(None)
    logprobs = wants_logprobs(body)
    key = api_key_of(request)
    if not body.stream:
        result = await until_disconnect(request, gateway.generate(rows, params, timeout_s, model, key))
        record.add(result.stats)
        answer = response(
            chat,
            record.request_id,
            model,
            result.outputs,
            result.stats,
            logprobs=logprobs,
            copies=body.n,
            stops=params.stop,
        )
        return JSONResponse(answer)
    record.streamed = True
    events = gateway.stream(rows, params, timeout_s, model, key)
    # Admission errors (429, 503, 413) must be real statuses: the 200 goes out once the rows are admitted; from
    # then on keep-alive comments hold the connection while they wait.
    first = await anext(events)
    shape = StreamShape(
        request_id=record.request_id,
        model=model,
        created=int(time.time()),
        chat=chat,
        choices=len(rows),
        copies=body.n,
        stops=params.stop,
        logprobs=logprobs,
        include_usage=body.stream_options is not None and body.stream_options.include_usage,
    )
    return StreamingResponse(
        openai_events(shape, _prepend(first, events), record, gateway.settings.sse_keepalive_s),
        media_type="text/event-stream",
        headers=_SSE_HEADERS,
    )


async def _prepend(first: StreamEvent, events: AsyncGenerator[StreamEvent, None]) -> AsyncGenerator[StreamEvent, None]:
    try:
        yield first
        async for event in events:
            yield event
    finally:
        await events.aclose()
