"""All configuration in one place: ``GATEWAY_*`` environment variables, or the same names as CLI flags.

Built once in ``gateway serve`` (or by a test) and passed down; nothing reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_TRANSLATION_TEMPLATE = (
    "Translate the following segment into {target_lang}, without additional explanation.\n\n{text}"
)

# GATEWAY_TRANSLATION_MODEL=same serves /translate with the generation model through the prompt template.
SAME_AS_GENERATION = "same"


class Settings(BaseSettings):
    """The gateway's settings. Every field is ``GATEWAY_<NAME>`` in the environment and ``--<name>`` on the CLI."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", validate_default=True)

    # Models
    model: str | None = Field(None, description="HF id or local path of the generation model; unset: demo models")
    translation_model: str | None = Field(
        None, description="HF id or path of the translation model; unset: demo (no model) or the generation model"
    )
    revision: str | None = Field(None, description="model revision (branch, tag or commit) to load")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    trust_remote_code: bool = Field(False, description="run code shipped with the model (off: safer)")
    demo_cache_dir: Path | None = Field(None, description="where the built-in demo models are written")
    translation_prompt_template: str = DEFAULT_TRANSLATION_TEMPLATE
    translation_languages: list[str] | None = Field(
        None, description="override the language codes the translation model accepts"
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = Field(
        None, description="a key named 'default'; with any key set, every route but public_routes needs one"
    )
    api_keys_file: Path | None = Field(
        None, description="YAML list of named keys {name, sha256, requests_per_minute, tokens_per_minute, ...}"
    )
    public_routes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["/health", "/ready"], description="paths open without a key when keys are set"
    )
    rate_limit_storage: str = Field(
        "memory://", description="where the rate-limit counters live: memory:// or a redis:// URL shared by replicas"
    )
    rate_limit_on_storage_error: Literal["allow", "deny"] = Field(
        "allow", description="when the rate-limit storage is unreachable: allow the request, or deny it (503)"
    )
    cors_origins: list[str] = Field(default_factory=list, description="no CORS headers unless set")
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_header_bytes: int = Field(
        16_384, ge=1024, description="a request's head (request line and headers): over it, 431 while it arrives"
    )
    max_url_bytes: int = Field(
        8192, ge=256, description="a request's target (path and query): over it, 414 (at most max_header_bytes)"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="a request's head must arrive within this (from its first byte, or the connection)"
    )
    body_timeout_s: float = Field(30.0, gt=0, description="a request's body must arrive within this of its first read")
    keep_alive_timeout_s: int = Field(5, ge=1, description="an idle keep-alive connection is closed after this")
    max_connections: int = Field(1000, ge=1, description="open connections; a request on one more gets 503")

    # Limits
    max_input_tokens: int = Field(1024, ge=1)
    max_new_tokens_limit: int = Field(512, ge=1, description="largest max_new_tokens a request may ask for")
    default_max_new_tokens: int = Field(20, ge=1)
    max_translation_segments: int = Field(64, ge=1)
    max_stop_sequences: int = Field(8, ge=0)

    # Scheduling
    max_batch_size: int = Field(32, ge=1)
    max_batch_wait_ms: float = Field(25.0, ge=0)
    max_queue: int = Field(256, ge=1)
    model_process: bool = Field(
        True, description="run each model's decode loop in a process of its own (false: a thread of this process)"
    )
    request_timeout_s: float = Field(60.0, gt=0)
    max_request_timeout_s: float = Field(600.0, gt=0)
    watchdog_s: float = Field(120.0, gt=0, description="a submission running longer than this resets the decode loop")
    drain_timeout_s: float = Field(30.0, ge=0, description="grace period for in-flight work on SIGTERM")

    # Circuit breaker
    breaker_failure_threshold: int = Field(5, ge=1, description="consecutive failures that open the breaker")
    breaker_failure_ratio: float = Field(0.5, gt=0, le=1)
    breaker_window: int = Field(20, ge=1, description="outcomes in the sliding window for the ratio")
    breaker_min_calls: int = Field(10, ge=1, description="outcomes needed before the ratio can open")
    breaker_recovery_s: float = Field(30.0, gt=0, description="first open period")
    breaker_max_recovery_s: float = Field(300.0, gt=0)
    breaker_half_open_probes: int = Field(1, ge=1)

    # Observability and operations
    log_payloads: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    otel: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry (spans and HTTP metrics through the global providers); off, it "
        "costs nothing per request",
    )
    enable_faults: bool = False
    alertmanager_url: str | None = Field(
        None, description="Alertmanager's base URL (http://alertmanager:9093): GET /status lists its active alerts"
    )
    health_window_s: float = Field(300.0, gt=0, description="the sliding window of the health score, in seconds")

    # Output quality (gateway.quality): signals per response, a rolling score per model, the canary
    quality_enabled: bool = Field(True, description="evaluate every finished response (flags and a score)")
    quality_window: int = Field(100, ge=1, description="responses in each model's rolling quality score")
    quality_threshold: float = Field(0.7, ge=0, le=1, description="rolling quality score below which to warn")
    quality_langid_rate: float = Field(
        0.2, ge=0, le=1, description="fraction of translations whose output language is identified (py3langid)"
    )
    canary_interval_s: float = Field(0.0, ge=0, description="seconds between canary rounds; 0: no canary")
    canary_file: Path | None = Field(
        None, description="canary prompts and expectations (YAML or .jsonl); unset: the built-in demo set"
    )

    # The OpenAI API
    strict_model_names: bool = Field(
        False, description="an unknown `model` on /v1 is a 404 (false: it goes to the default generation model)"
    )
    sse_keepalive_s: float = Field(
        15.0, gt=0, description="a comment line on an OpenAI stream that has sent nothing for this long"
    )

    @field_validator("model", "translation_model", "revision", "alertmanager_url", "api_keys_file", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("public_routes", mode="before")
    @classmethod
    def _split_routes(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("public_routes")
    @classmethod
    def _check_routes(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"public_routes: {path!r} must be a path starting with '/'")
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _check_storage(cls, value: str) -> str:
        value = value.strip()
        if value != "memory://" and not value.startswith(("redis://", "rediss://", "redis+unix://")):
            raise ValueError("rate_limit_storage must be memory:// or a redis://, rediss:// or redis+unix:// URL")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError("device must be auto, cpu, cuda or cuda:N")

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.default_max_new_tokens > self.max_new_tokens_limit:
            raise ValueError("default_max_new_tokens exceeds max_new_tokens_limit")
        if self.request_timeout_s > self.max_request_timeout_s:
            raise ValueError("request_timeout_s exceeds max_request_timeout_s")
        if "{text}" not in self.translation_prompt_template:
            raise ValueError("translation_prompt_template must contain {text}")
        return self

    @property
    def uses_demo_models(self) -> bool:
        return self.model is None
