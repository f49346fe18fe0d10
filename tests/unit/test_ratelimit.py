"""Per-key limits (``gateway.ratelimit``) over the real ``limits`` storages: ``memory://``, and a Redis URL where
nothing listens (the storage's own connection error, as when Redis is down).

``limits`` reads the wall clock itself (no clock can be injected), so the windows here are one second long and
the one test that needs a window to pass waits it out.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from gateway.errors import PayloadTooLarge, RateLimited, RateLimitUnavailable
from gateway.keys import ApiKey, KeyLimits
from gateway.ratelimit import RateLimiter, rate_limit_storage
from metrics import Instruments, PrometheusRecorder
from tests.conftest import free_port


def key(name: str = "team-a", **limits: int) -> ApiKey:
    return ApiKey(name, bytes(32), KeyLimits(**limits))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def recorder(registry: CollectorRegistry) -> PrometheusRecorder:
    return PrometheusRecorder(Instruments(registry), models=[], routes=[], keys=["team-a", "team-b"])


def limiter(recorder: PrometheusRecorder, url: str = "memory://", **options: object) -> RateLimiter:
    return RateLimiter(rate_limit_storage(url), sink=recorder, **options)  # type: ignore[arg-type]


def count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


async def test_requests_per_minute_refuse_the_next_request_with_what_is_left_and_when(
    recorder: PrometheusRecorder, registry: CollectorRegistry
) -> None:
    rl = limiter(recorder, window_s=1)
    a, b = key(requests_per_minute=2), key("team-b", requests_per_minute=2)
    for _ in range(2):
        async with rl.request(a):
            pass
    with pytest.raises(RateLimited) as refused:
        async with rl.request(a):
            pass
    error = refused.value
    assert (error.limit, error.quota, error.remaining) == ("requests", 2, 0)
    assert error.status_code == 429 and error.error_type == "rate_limited"
    assert error.retry_after is not None and 1 <= error.retry_after <= 1 and error.reset_s == 1
    assert count(registry, "gateway_rate_limited_total", key="team-a", limit="requests") == 1
    assert count(registry, "gateway_rate_limited_total", key="team-b", limit="requests") == 0
    async with rl.request(b):  # another key has its own window
        pass
    await asyncio.sleep(1.1)  # the window moves on
    async with rl.request(a):
        pass


async def test_concurrent_requests_are_counted_per_key_and_released(
    recorder: PrometheusRecorder, registry: CollectorRegistry
) -> None:
    rl = limiter(recorder)
    a = key(max_concurrent=2)
    async with rl.request(a), rl.request(a):
        assert rl.in_flight("team-a") == 2
        with pytest.raises(RateLimited) as refused:
            async with rl.request(a):
                pass
        assert (refused.value.limit, refused.value.quota) == ("concurrent", 2)
        async with rl.request(key("team-b", max_concurrent=1)):
            pass
    assert rl.in_flight("team-a") == 0
    with pytest.raises(ValueError):
        async with rl.request(a):
            raise ValueError("the request failed")
    assert rl.in_flight("team-a") == 0  # a failure frees the slot too
    assert count(registry, "gateway_rate_limited_total", key="team-a", limit="concurrent") == 1


async def test_a_request_refused_for_its_rate_does_not_keep_a_slot(recorder: PrometheusRecorder) -> None:
    rl = limiter(recorder)
    a = key(requests_per_minute=1, max_concurrent=5)
    async with rl.request(a):
        pass
    with pytest.raises(RateLimited):
        async with rl.request(a):
            pass
    assert rl.in_flight("team-a") == 0


async def test_tokens_are_charged_then_corrected_by_the_refund(
    recorder: PrometheusRecorder, registry: CollectorRegistry
) -> None:
    rl = limiter(recorder)
    a = key(tokens_per_minute=100)
    async with rl.request(a) as meter:
        assert meter is not None
        await meter.charge(60)  # prompt plus max_new_tokens
        with pytest.raises(RateLimited) as refused:
            await meter.charge(50)
        assert (refused.value.limit, refused.value.quota, refused.value.remaining) == ("tokens", 100, 40)
        await meter.refund(30)  # 30 of its max_new_tokens were not generated
        await meter.charge(50)  # 60 - 30 + 50 = 80
        with pytest.raises(RateLimited):
            await meter.charge(21)  # 101
        await meter.charge(20)  # exactly the limit
        # A refund is at most what was charged: the prompt and generated tokens cannot be given back twice.
        await meter.refund(10_000)
        assert meter.refunded == meter.charged == 130
    async with rl.request(a) as meter:
        assert meter is not None
        await meter.charge(100)  # everything came back
    assert count(registry, "gateway_rate_limited_total", key="team-a", limit="tokens") == 2


async def test_a_request_larger_than_the_whole_limit_is_413_not_429(recorder: PrometheusRecorder) -> None:
    rl = limiter(recorder)
    async with rl.request(key(tokens_per_minute=100)) as meter:
        assert meter is not None
        with pytest.raises(PayloadTooLarge, match="the key's limit is 100 tokens per minute"):
            await meter.charge(101)


async def test_no_key_or_no_token_limit_means_no_meter(recorder: PrometheusRecorder) -> None:
    rl = limiter(recorder)
    async with rl.request(None) as meter:
        assert meter is None
    async with rl.request(key(requests_per_minute=5)) as meter:
        assert meter is None


@pytest.mark.parametrize("policy", ["allow", "deny"])
async def test_an_unreachable_storage_is_allowed_or_denied_as_configured_and_counted(
    policy: str, recorder: PrometheusRecorder, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    rl = limiter(recorder, f"redis://127.0.0.1:{free_port()}", on_storage_error=policy)
    a = key(requests_per_minute=1, tokens_per_minute=10)
    caplog.set_level(logging.WARNING, logger="gateway.ratelimit")
    for _ in range(3):  # more than the limit: nothing can count them
        if policy == "allow":
            async with rl.request(a) as meter:
                assert meter is not None
                await meter.charge(10)
                await meter.refund(5)  # a refund that cannot be stored is counted, never raised
        else:
            with pytest.raises(RateLimitUnavailable) as refused:
                async with rl.request(a):
                    pass
            assert refused.value.status_code == 503 and refused.value.retry_after == 5.0
    # allow: per request the refund count, the request hit, the charge (count + take) and the refund
    expected = 3 * 4 if policy == "allow" else 3
    assert count(registry, "gateway_rate_limit_storage_errors_total") == expected
    assert rl.in_flight("team-a") == 0
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1  # logged once, not once per request
    assert ("denied" if policy == "deny" else "allowed") in unreachable[0].getMessage()


def test_the_storage_is_memory_or_redis() -> None:
    assert type(rate_limit_storage("memory://")).__name__ == "MemoryStorage"
    assert type(rate_limit_storage("redis://127.0.0.1:6379/0")).__name__ == "RedisStorage"
