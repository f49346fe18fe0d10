"""Request and response bodies. Requests follow text-generation-inference's schema so its clients work.

TGI's clients send every parameter of TGI's schema, mostly as null or false. Parameters the gateway does not
implement are accepted at their default value and refused with 422 naming them otherwise; anything outside the
schema is refused with 422 naming it. Types are strict, as in TGI's own (serde) parsing: ``"5"`` or ``true`` is not
an integer, ``1`` is not a boolean (an integer is still a valid float).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.errors import InvalidRequest
from gateway.types import GenerationOutput, GenerationParams, SamplingParams, Token, TopToken

# Bounds the model can honour: below these, dividing the logits overflows to inf and sampling has no
# distribution left. A smaller temperature is greedy decoding; a smaller repetition penalty is refused.
MIN_TEMPERATURE = 1e-5
MIN_REPETITION_PENALTY = 1e-2
_MAX_STOP_CHARS = 256
MAX_TOP_N_TOKENS = 5  # TGI's own default cap (``--max-top-n-tokens``)


class GenerateParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, gt=0.0, le=100.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=100_000)
    typical_p: float | None = Field(None, gt=0.0, le=1.0)
    do_sample: bool | None = False
    repetition_penalty: float | None = Field(None, ge=MIN_REPETITION_PENALTY, le=100.0)
    stop: list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    return_full_text: bool | None = False
    details: bool | None = False
    truncate: int | None = Field(None, ge=1)
    timeout_s: float | None = Field(None, gt=0.0, description="this request's deadline (gateway extension)")
    # Per generated token, this many most likely tokens with their log-probabilities (``details.top_tokens``).
    top_n_tokens: int | None = Field(None, ge=0)
    # OpenAI's frequency penalty, as TGI takes it: a token's logit loses this much per time it was generated.
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    # Accepted at their defaults only (TGI clients send them):
    best_of: int | None = None
    decoder_input_details: bool | None = False
    watermark: bool | None = False
    grammar: Any | None = None
    adapter_id: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_sequences(cls, value: list[str] | None) -> list[str] | None:
        for s in value or []:
            if not s or len(s) > _MAX_STOP_CHARS:
                raise ValueError(f"each stop sequence must have 1 to {_MAX_STOP_CHARS} characters")
        return value

    def unsupported(self) -> str | None:
        """The first parameter set to a value the gateway does not implement."""
        checks: list[tuple[str, bool]] = [
            ("best_of", self.best_of not in (None, 1)),
            ("decoder_input_details", bool(self.decoder_input_details)),
            ("watermark", bool(self.watermark)),
            ("grammar", self.grammar is not None),
            ("adapter_id", self.adapter_id is not None),
        ]
        return next((name for name, bad in checks if bad), None)

    def to_domain(self, *, default_max_new_tokens: int, max_new_tokens_limit: int, max_stop: int) -> GenerationParams:
        bad = self.unsupported()
        if bad is not None:
            raise InvalidRequest(f"parameters.{bad}: not supported by this gateway; leave it unset")
        max_new = self.max_new_tokens or default_max_new_tokens
        if max_new > max_new_tokens_limit:
            raise InvalidRequest(f"parameters.max_new_tokens: must be <= {max_new_tokens_limit}")
        stop = tuple(self.stop or ())
        if len(stop) > max_stop:
            raise InvalidRequest(f"parameters.stop: at most {max_stop} stop sequences")
        top_n = self.top_n_tokens or 0
        if top_n > MAX_TOP_N_TOKENS:
            raise InvalidRequest(f"parameters.top_n_tokens: must be <= {MAX_TOP_N_TOKENS}")
        temperature = self.temperature if self.temperature is not None else 1.0
        top_k = self.top_k or 0
        top_p = self.top_p if self.top_p is not None else 1.0
        typical_p = self.typical_p if self.typical_p is not None else 1.0
        # As TGI does: any sampling warper turns sampling on. A temperature too small to divide the logits by
        # without overflow is greedy decoding, which is what it means (vLLM does the same).
        greedy = temperature < MIN_TEMPERATURE
        temperature = 1.0 if greedy else temperature
        do_sample = not greedy and (
            bool(self.do_sample) or temperature != 1.0 or top_k > 0 or top_p < 1.0 or typical_p < 1.0
        )
        sampling = SamplingParams(
            do_sample=do_sample,
            temperature=temperature if do_sample else 1.0,
            top_k=top_k if do_sample else 0,
            top_p=top_p if do_sample else 1.0,
            typical_p=typical_p if do_sample else 1.0,
            repetition_penalty=self.repetition_penalty or 1.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            seed=self.seed if do_sample else None,
        )
        return GenerationParams(
            max_new_tokens=max_new, sampling=sampling, stop=stop, truncate=self.truncate, top_logprobs=top_n
        )


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    inputs: str = Field(min_length=1)
    parameters: GenerateParameters = Field(default_factory=lambda: GenerateParameters())


class CompatRequest(GenerateRequest):
    """TGI's ``POST /`` body: ``stream`` picks the answer's shape."""

    stream: bool = False


class TranslateParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, gt=0.0, le=100.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=100_000)
    do_sample: bool = False
    repetition_penalty: float | None = Field(None, ge=MIN_REPETITION_PENALTY, le=100.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    timeout_s: float | None = Field(None, gt=0.0)

    def as_generate(self) -> GenerateParameters:
        return GenerateParameters(**self.model_dump(exclude_none=True))


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | list[str]
    source_lang: str = Field(min_length=1, max_length=35)
    target_lang: str = Field(min_length=1, max_length=35)
    parameters: TranslateParameters = Field(default_factory=lambda: TranslateParameters())

    @field_validator("text")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        segments = [value] if isinstance(value, str) else value
        if not segments:
            raise ValueError("must be a non-empty string or a non-empty list of strings")
        if any(not s.strip() for s in segments):
            raise ValueError("segments must not be empty")
        return value


class FaultRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["oom", "error", "stall", "degrade"]
    count: int | None = Field(None, ge=1, le=1_000_000)
    ratio: float | None = Field(None, gt=0.0, le=1.0)
    seconds: float = Field(30.0, gt=0.0, le=3600.0)
    output: Literal["repeat", "empty"] = "repeat"  # degrade: one repeated token, or nothing


# -- responses --


def token_json(token: Token | TopToken) -> dict[str, Any]:
    return {"id": token.id, "text": token.text, "logprob": token.logprob, "special": token.special}


def top_tokens_json(token: Token) -> list[dict[str, Any]]:
    """TGI's ``top_tokens`` of one generated token: the step's most likely tokens, most likely first."""
    return [token_json(t) for t in token.top]


def _all_top_tokens(output: GenerationOutput) -> list[list[dict[str, Any]]] | None:
    # TGI sends null unless top_n_tokens was asked for; a row that asked has alternatives at every step.
    if not any(t.top for t in output.tokens):
        return None
    return [top_tokens_json(t) for t in output.tokens]


def details_json(output: GenerationOutput) -> dict[str, Any]:
    return {
        "finish_reason": output.finish_reason.value,
        "generated_tokens": output.generated_tokens,
        "prompt_tokens": output.prompt_tokens,
        "seed": output.seed,
        "prefill": [],
        "tokens": [token_json(t) for t in output.tokens],
        "top_tokens": _all_top_tokens(output),
        "best_of_sequences": None,
    }


def generate_json(output: GenerationOutput, *, details: bool, prefix: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"generated_text": prefix + output.text}
    if details:
        body["details"] = details_json(output)
    return body


def stream_token_json(index: int, token: Token) -> dict[str, Any]:
    return {
        "index": index,
        "token": token_json(token),
        "top_tokens": top_tokens_json(token) if token.top else None,
        "generated_text": None,
        "details": None,
    }


def stream_final_json(index: int, token: Token, output: GenerationOutput, prefix: str = "") -> dict[str, Any]:
    return {
        "index": index,
        "token": token_json(token),
        "top_tokens": top_tokens_json(token) if token.top else None,
        "generated_text": prefix + output.text,
        "details": {
            "finish_reason": output.finish_reason.value,
            "generated_tokens": output.generated_tokens,
            "seed": output.seed,
            "input_length": output.prompt_tokens,
        },
    }
