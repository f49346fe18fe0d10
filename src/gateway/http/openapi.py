"""What ``/openapi.json`` says each route answers: every error status with its body, and the success bodies.

The routes answer ``JSONResponse`` or a stream themselves, so these models only document (nothing is validated on
the way out); a test runs schemathesis against the real gateway to keep them true. Native routes answer errors in
the gateway's shape, ``/v1`` routes in OpenAI's (``gateway.http.errors``). Streams are ``text/event-stream``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

# One event of a stream (the schema applies to each event, as schemathesis reads ``text/event-stream``): its data
# is one JSON object (TGI's token event, OpenAI's chunk, an error event) or, on /v1, the final ``[DONE]``.
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "description": "a JSON object, or [DONE] to end a /v1 stream"},
        "event": {"type": "string"},
    },
}

# -- error bodies --


class ErrorBody(BaseModel):
    """Every error of the native routes."""

    error: str = Field(description="human readable message")
    error_type: str = Field(description="the error's kind, as in the metrics (queue_full, validation, ...)")
    request_id: str


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = Field(None, description="the gateway's error_type")


class OpenAIErrorBody(BaseModel):
    """Every error of the ``/v1`` routes (the request id is in ``X-Request-ID``)."""

    error: OpenAIErrorDetail


_WHEN = {
    400: "a request the model cannot serve as asked (on /v1: any malformed request)",
    401: "an API key is required and missing or wrong",
    404: "the model does not exist (strict model names)",
    408: "the request's head or body did not arrive in time (the connection is closed)",
    413: "the body, or the prompt's characters or tokens, over the limit",
    414: "the request target is too long",
    422: "malformed request or parameter out of range (the message names the field)",
    429: "the admission queue is full (Retry-After)",
    431: "the request's headers are too large",
    500: "the model failed (never for bad input)",
    503: "not ready, draining, circuit breaker open, or too many connections (Retry-After)",
    504: "the request's deadline passed before it finished",
}

# Any request may meet these: the connection's limits, and the last net for an unexpected failure.
ANY_ROUTE = (408, 414, 431, 500, 503)
INFERENCE = (*ANY_ROUTE, 400, 401, 413, 422, 429, 504)
OPENAI_INFERENCE = (*ANY_ROUTE, 400, 401, 404, 413, 429, 504)


def errors(statuses: tuple[int, ...], *, openai: bool = False) -> dict[int | str, dict[str, Any]]:
    model = OpenAIErrorBody if openai else ErrorBody
    return {status: {"model": model, "description": _WHEN[status]} for status in sorted(set(statuses))}


def responses(
    statuses: tuple[int, ...],
    ok: type[BaseModel] | dict[str, Any] | None = None,
    *,
    openai: bool = False,
    stream: Literal["no", "only", "also"] = "no",
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: its errors, and its 200 as ``ok`` (a model, or a JSON schema) and/or an SSE
    stream."""
    documented = errors(statuses, openai=openai)
    if ok is None and stream == "no":
        return documented
    ok_doc: dict[str, Any] = {"description": "Successful Response", "content": {}}
    if isinstance(ok, dict):
        ok_doc["content"]["application/json"] = {"schema": ok}
    elif ok is not None:
        ok_doc["model"] = ok  # FastAPI puts its schema under components and refers to it
    if stream != "no":
        ok_doc["content"]["text/event-stream"] = {"schema": SSE_EVENT}
    documented[200] = ok_doc
    return documented


# -- success bodies of the native routes --


class EventStreamResponse(StreamingResponse):
    """A stream of Server-Sent Events (as a route's ``response_class``: its 200 is documented as SSE)."""

    media_type = "text/event-stream"


class TokenBody(BaseModel):
    id: int
    text: str
    logprob: float | None
    special: bool


class GenerateDetails(BaseModel):
    finish_reason: Literal["length", "eos_token", "stop_sequence"]
    generated_tokens: int
    prompt_tokens: int
    seed: int | None
    prefill: list[TokenBody]
    tokens: list[TokenBody]


class GenerateResponse(BaseModel):
    generated_text: str
    details: GenerateDetails | None = Field(None, description="present when parameters.details is true")


class TranslateResponse(BaseModel):
    translation: str | list[str] = Field(description="the same shape as the request's text")
    source_lang: str
    target_lang: str
    details: dict[str, Any]


class ReadyResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    components: dict[str, Any]


# -- success bodies of /v1 --


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: dict[str, Any] | None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None
    finish_reason: Literal["stop", "length"]


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


def install_openapi(app: FastAPI) -> None:
    """FastAPI's schema, without the 422 body it adds by itself on routes with a body (native routes document
    their own 422, in the gateway's error shape; ``/v1`` routes never answer 422: a malformed body is a 400), and
    with the errors of a streaming route as JSON (FastAPI gives every response the route's media type)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    answers = operation.get("responses", {})
                    if path.startswith("/v1/"):
                        answers.pop("422", None)
                    for status, answer in answers.items():
                        content = answer.get("content", {})
                        if status >= "400" and "text/event-stream" in content:  # errors are JSON on any route
                            content["application/json"] = content.pop("text/event-stream")
            components = schema.get("components", {}).get("schemas", {})
            if "HTTPValidationError" not in str(schema.get("paths")):
                components.pop("HTTPValidationError", None)
                components.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
