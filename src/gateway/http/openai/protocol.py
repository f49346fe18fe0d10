"""OpenAI's request bodies for ``/v1/chat/completions`` and ``/v1/completions``, as pydantic models.

Unknown fields are ignored (as vLLM does: clients send fields of newer API versions). Fields the gateway does not
implement are refused with 400 naming them when they ask for something (``unsupported``); sent at their neutral
value (``tools: []``, ``response_format: {"type": "text"}``, ``stream_options: null``) they are accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, field_validator

_MAX_STOP = 16
_MAX_STOP_CHARS = 256
_MAX_BIAS_ENTRIES = 300

Number = StrictFloat | StrictInt


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False


class SamplingFields(BaseModel):
    """The fields chat and completions share."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Number | None = Field(None, ge=0.0, le=2.0)
    top_p: Number | None = Field(None, gt=0.0, le=1.0)
    n: StrictInt = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: StrictInt | None = Field(None, ge=0, le=2**63 - 1)
    presence_penalty: Number | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: Number | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[Number, Field(ge=-100.0, le=100.0)]] | None = None
    user: str | None = Field(None, max_length=256)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    # Unimplemented; accepted at their neutral value only (``unsupported``).
    tools: list[Any] | None = None
    tool_choice: Any | None = None
    functions: list[Any] | None = None
    function_call: Any | None = None
    response_format: dict[str, Any] | None = None
    audio: Any | None = None
    modalities: list[str] | None = None
    prediction: Any | None = None
    best_of: StrictInt | None = None
    echo: StrictBool | None = None
    suffix: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > _MAX_STOP:
            raise ValueError(f"at most {_MAX_STOP} stop sequences")
        if any(not s or len(s) > _MAX_STOP_CHARS for s in stops):
            raise ValueError(f"each stop sequence must have 1 to {_MAX_STOP_CHARS} characters")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if len(value) > _MAX_BIAS_ENTRIES:
            raise ValueError(f"at most {_MAX_BIAS_ENTRIES} entries")
        if any(not key.isdigit() or len(key) > 9 for key in value):
            raise ValueError("keys must be token ids")
        return value

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def unsupported(self) -> str | None:
        """The first field that asks for something the gateway does not implement."""
        checks: list[tuple[str, bool]] = [
            ("tools", bool(self.tools)),
            ("tool_choice", self.tool_choice not in (None, "none", "auto")),
            ("functions", bool(self.functions)),
            ("function_call", self.function_call not in (None, "none", "auto")),
            ("response_format", self.response_format is not None and self.response_format.get("type") != "text"),
            ("audio", self.audio is not None),
            ("modalities", self.modalities is not None and self.modalities != ["text"]),
            ("prediction", self.prediction is not None),
            ("best_of", self.best_of not in (None, 1)),
            ("echo", bool(self.echo)),
            ("suffix", bool(self.suffix)),
        ]
        return next((name for name, bad in checks if bad), None)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: StrictBool | None = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[str] = Field(min_length=1)
    logprobs: StrictInt | None = Field(None, ge=0, le=5)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str | list[str]) -> str | list[str]:
        prompts = [value] if isinstance(value, str) else value
        if len(prompts) > 64:
            raise ValueError("at most 64 prompts")
        if any(not p for p in prompts):
            raise ValueError("prompts must not be empty")
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens
