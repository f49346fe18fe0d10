"""``Settings`` (``gateway.settings``): ``GATEWAY_*`` variables, defaults, and the checks that refuse a bad config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import DEFAULT_TRANSLATION_TEMPLATE, Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:

    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)


def test_defaults_are_the_safe_ones() -> None:
    settings = Settings()
    assert settings.uses_demo_models and settings.model is None
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.api_key is None and settings.cors_origins == []
    assert not settings.trust_remote_code and not settings.enable_faults and not settings.log_payloads
    assert settings.model_process and settings.translation_prompt_template == DEFAULT_TRANSLATION_TEMPLATE


def test_read_from_gateway_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GATEWAY_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("GATEWAY_MODEL_PROCESS", "false")
    monkeypatch.setenv("GATEWAY_API_KEY", "s3cret")
    monkeypatch.setenv("GATEWAY_CORS_ORIGINS", '["https://a.example"]')
    monkeypatch.setenv("GATEWAY_DEMO_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MAX_BATCH_SIZE", "99")  # without the prefix: not ours
    settings = Settings()
    assert settings.max_batch_size == 4 and not settings.model_process
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)  # a secret never shows in a repr (or a log line made of one)
    assert settings.cors_origins == ["https://a.example"] and settings.demo_cache_dir == tmp_path


def test_blank_model_names_mean_unset() -> None:
    settings = Settings(model="  ", translation_model="", revision=" ")
    assert settings.model is None and settings.translation_model is None and settings.revision is None
    assert Settings(model="org/name").uses_demo_models is False


@pytest.mark.parametrize(
    ("given", "kept"), [("auto", "auto"), ("CPU", "cpu"), (" cuda ", "cuda"), ("cuda:1", "cuda:1")]
)
def test_devices(given: str, kept: str) -> None:
    assert Settings(device=given).device == kept


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "mps", ""])
def test_unknown_devices_are_refused(device: str) -> None:
    with pytest.raises(ValidationError, match="device must be"):
        Settings(device=device)


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"default_max_new_tokens": 600, "max_new_tokens_limit": 512}, "default_max_new_tokens"),
        ({"request_timeout_s": 700.0, "max_request_timeout_s": 600.0}, "request_timeout_s"),
        ({"translation_prompt_template": "Translate into {target_lang}"}, "{text}"),
        ({"port": 70000}, "port"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"breaker_failure_ratio": 1.5}, "breaker_failure_ratio"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
        ({"dtype": "int8"}, "dtype"),
    ],
)
def test_inconsistent_or_out_of_range_values_are_refused(values: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle.replace("{", r"\{").replace("}", r"\}")):
        Settings(**values)  # type: ignore[arg-type]


def test_keys_and_rate_limit_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    defaults = Settings()
    assert defaults.public_routes == ["/health", "/ready"] and defaults.api_keys_file is None
    assert defaults.rate_limit_storage == "memory://" and defaults.rate_limit_on_storage_error == "allow"
    monkeypatch.setenv("GATEWAY_PUBLIC_ROUTES", " /health, /ready ,/metrics,")
    monkeypatch.setenv("GATEWAY_API_KEYS_FILE", str(tmp_path / "keys.yaml"))
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_STORAGE", "redis://redis:6379/0")
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_ON_STORAGE_ERROR", "deny")
    settings = Settings()
    assert settings.public_routes == ["/health", "/ready", "/metrics"]
    assert settings.api_keys_file == tmp_path / "keys.yaml"
    assert settings.rate_limit_storage == "redis://redis:6379/0" and settings.rate_limit_on_storage_error == "deny"
    monkeypatch.setenv("GATEWAY_PUBLIC_ROUTES", "")
    assert Settings().public_routes == []  # nothing public: even the probes need a key


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"public_routes": "health"}, "must be a path"),
        ({"rate_limit_storage": "memcached://x:11211"}, "rate_limit_storage must be"),
        ({"rate_limit_on_storage_error": "maybe"}, "rate_limit_on_storage_error"),
    ],
)
def test_bad_key_settings_are_refused(values: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        Settings(**values)  # type: ignore[arg-type]
