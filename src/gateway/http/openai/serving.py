"""OpenAI requests to the facade's domain requests, and the facade's outputs to OpenAI's response shapes.

Nothing here schedules or counts: the routes call the facade with what ``params_for`` builds and shape what comes
back with ``response`` or, streamed, the chunk builders (``streaming``).
"""

from __future__ import annotations

import time
from typing import Any

from gateway.errors import BadRequest, InvalidRequest
from gateway.http.openai.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields
from gateway.http.schemas import MIN_TEMPERATURE
from gateway.settings import Settings
from gateway.stats import RequestStats
from gateway.types import FinishReason, GenerationOutput, GenerationParams, SamplingParams, Token

_FINISH = {FinishReason.LENGTH: "length", FinishReason.EOS: "stop", FinishReason.STOP: "stop"}


def finish_reason(output: GenerationOutput) -> str:
    return _FINISH[output.finish_reason]


def answer_text(output: GenerationOutput, stops: tuple[str, ...]) -> str:
    """The text OpenAI's clients expect: without the stop sequence that ended it (the runner keeps it, as TGI)."""
    if output.finish_reason is not FinishReason.STOP:
        return output.text
    cut = min((i for i in (output.text.find(s) for s in stops) if i >= 0), default=len(output.text))
    return output.text[:cut]


def params_for(request: ChatCompletionRequest | CompletionRequest, settings: Settings) -> GenerationParams:
    """The domain parameters of an OpenAI request (400 naming the field for what the gateway does not do)."""
    bad = request.unsupported()
    if bad is not None:
        raise BadRequest(f"{bad}: not supported by this gateway", param=bad)
    max_new = request.requested_max_tokens() or settings.max_new_tokens_limit
    if max_new > settings.max_new_tokens_limit:
        field = "max_completion_tokens" if getattr(request, "max_completion_tokens", None) else "max_tokens"
        raise InvalidRequest(f"{field}: must be <= {settings.max_new_tokens_limit}", param=field)
    return GenerationParams(
        max_new_tokens=max_new,
        sampling=_sampling(request),
        stop=request.stops(),
        top_logprobs=_top_logprobs(request),
    )


def _sampling(request: SamplingFields) -> SamplingParams:
    # OpenAI's defaults: temperature 1 and top_p 1, that is sampling; temperature 0 is greedy.
    temperature = 1.0 if request.temperature is None else float(request.temperature)
    top_p = 1.0 if request.top_p is None else float(request.top_p)
    do_sample = temperature >= MIN_TEMPERATURE  # a smaller one is greedy, as 0 is
    bias = tuple(sorted((int(k), float(v)) for k, v in (request.logit_bias or {}).items()))
    return SamplingParams(
        do_sample=do_sample,
        temperature=temperature if do_sample else 1.0,
        top_p=top_p if do_sample else 1.0,
        presence_penalty=float(request.presence_penalty or 0.0),
        frequency_penalty=float(request.frequency_penalty or 0.0),
        logit_bias=bias,
        seed=request.seed if do_sample else None,
    )


def _top_logprobs(request: ChatCompletionRequest | CompletionRequest) -> int:
    if isinstance(request, CompletionRequest):
        return request.logprobs or 0
    if request.top_logprobs and not request.logprobs:
        raise InvalidRequest("top_logprobs: needs logprobs set to true", param="top_logprobs")
    return request.top_logprobs or 0


def wants_logprobs(request: ChatCompletionRequest | CompletionRequest) -> bool:
    if isinstance(request, CompletionRequest):
        return request.logprobs is not None
    return bool(request.logprobs)


def chat_messages(request: ChatCompletionRequest) -> list[dict[str, str]]:
    """The messages as the chat template takes them (``developer`` is OpenAI's new name for ``system``)."""
    return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in request.messages]


def usage(stats: RequestStats, n: int) -> dict[str, int]:
    """Token counts as OpenAI reports them: each prompt once, however many (``n``) choices it has."""
    prompt_tokens = stats.prompt_tokens // n
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "total_tokens": prompt_tokens + stats.generated_tokens,
    }


# -- logprobs --


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_logprobs(tokens: list[Token]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": t.text,
                "logprob": t.logprob if t.logprob is not None else -9999.0,
                "bytes": _bytes(t.text),
                "top_logprobs": [{"token": a.text, "logprob": a.logprob, "bytes": _bytes(a.text)} for a in t.top],
            }
            for t in tokens
        ]
    }


def completion_logprobs(tokens: list[Token], offset: int = 0) -> dict[str, Any]:
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.text)
    return {
        "tokens": [t.text for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{a.text: a.logprob for a in t.top} for t in tokens],
        "text_offset": offsets,
    }


# -- whole answers --


def envelope(chat: bool, request_id: str, model: str, created: int | None = None) -> dict[str, Any]:
    """The fields every answer and every chunk of a stream carry."""
    return {
        "id": ("chatcmpl-" if chat else "cmpl-") + request_id,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
    }


def response(
    chat: bool,
    request_id: str,
    model: str,
    outputs: list[GenerationOutput],
    stats: RequestStats,
    *,
    logprobs: bool,
    copies: int,
    stops: tuple[str, ...],
) -> dict[str, Any]:
    """A whole chat completion or text completion: one choice per output, ``copies`` (``n``) per prompt."""
    choices: list[dict[str, Any]] = []
    for i, output in enumerate(outputs):
        text = answer_text(output, stops)
        if chat:
            logs = chat_logprobs(output.tokens) if logprobs else None
            choices.append({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": logs})
        else:
            logs = completion_logprobs(output.tokens) if logprobs else None
            choices.append({"index": i, "text": text, "logprobs": logs})
        choices[-1]["finish_reason"] = finish_reason(output)
    return {**envelope(chat, request_id, model), "choices": choices, "usage": usage(stats, copies)}
