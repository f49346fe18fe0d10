"""Per-key rate limits: requests per minute, tokens per minute, concurrent requests.

Requests and tokens are counted in moving windows of the ``limits`` library (one entry per request or token,
each leaving the window a minute after it was taken), in the storage ``GATEWAY_RATE_LIMIT_STORAGE`` names:
``memory://`` (this process) or Redis (shared by replicas, so that a key's limit holds across all of them).

- **requests**: one entry per request, taken when the facade starts it (after authentication and validation).
- **tokens**: a request is charged its prompt tokens plus ``max_new_tokens`` per row when it is admitted (the
  prompt is tokenized by then), and when it finishes the part it did not generate comes back: the refund is a
  second moving window of its own (``tokens-refund``), and a charge fits while ``charged - refunded + cost`` is
  within the limit (the charge window's limit is raised by what was refunded). A refund enters its window when
  the request ends, so it outlives its charge by the request's duration: for that long after the charge left the
  window, the key may use up to that refund again. A request that failed without a count of what it generated
  gets all of its ``max_new_tokens`` back; its prompt stays charged. A request larger than the whole limit could
  never fit: it is a 413, not a 429.
- **concurrent**: a counter in this process. With replicas each one allows ``max_concurrent`` for the key.

When the storage is unreachable (Redis down), the request is allowed or refused with 503
(``GATEWAY_RATE_LIMIT_ON_STORAGE_ERROR``); either way it is counted (``gateway_rate_limit_storage_errors_total``),
and the first error after a success, and the recovery, are logged. A refused request raises ``RateLimited`` (429,
never counted by the breaker) and is counted by the sink under the key's name.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal, Protocol

from limits.aio.storage import MemoryStorage, MovingWindowSupport, RedisStorage, Storage
from limits.errors import StorageError

from gateway.errors import PayloadTooLarge, RateLimited, RateLimitUnavailable
from gateway.keys import ApiKey

__all__ = ["RateLimitSink", "RateLimiter", "TokenMeter", "rate_limit_storage"]

log = logging.getLogger("gateway.ratelimit")

WINDOW_S = 60
_UNBOUNDED = 2**31 - 1  # the refund window never refuses an entry
_REDIS_TIMEOUT_S = 1.0  # a dead or unreachable Redis costs a request at most this much, not the OS's TCP timeout

OnStorageError = Literal["allow", "deny"]


class RateLimitSink(Protocol):
    def rate_limited(self, key: str, limit: str) -> None: ...

    def rate_limit_storage_error(self) -> None: ...


def rate_limit_storage(url: str) -> Storage:
    """The ``limits`` storage for ``memory://`` or a ``redis://`` URL (through redis-py's asyncio client; its
    errors wrapped as ``limits.errors.StorageError``). Nothing connects until the first request."""
    if url == "memory://":
        return MemoryStorage()
    return RedisStorage(
        "async+" + url,
        implementation="redispy",
        wrap_exceptions=True,
        socket_timeout=_REDIS_TIMEOUT_S,
        socket_connect_timeout=_REDIS_TIMEOUT_S,
    )


class RateLimiter:
    """The limits of each key, over one ``limits`` storage. ``request(key)`` wraps one request."""

    def __init__(
        self,
        storage: Storage,
        *,
        sink: RateLimitSink,
        on_storage_error: OnStorageError = "allow",
        window_s: int = WINDOW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(storage, MovingWindowSupport):
            raise TypeError(f"{type(storage).__name__} has no moving window")
        self.storage = storage
        self.window: MovingWindowSupport = storage
        self.sink = sink
        self.on_storage_error = on_storage_error
        self.window_s = window_s
        self._clock = clock  # the storage's clock (wall time): only for the reset a refusal reports
        self._in_flight: dict[str, int] = {}
        self._storage_failing = False

    def in_flight(self, name: str) -> int:
        return self._in_flight.get(name, 0)

    @contextlib.asynccontextmanager
    async def request(self, key: ApiKey | None) -> AsyncIterator[TokenMeter | None]:
        """Hold one of the key's concurrent slots and take one request from its window for the body's duration;
        yield the token meter (None when the key has no token limit, or there is no key)."""
        if key is None:
            yield None
            return
        limits = key.limits
        self._take_slot(key)
        try:
            if limits.requests_per_minute is not None:
                await self.take(key.name, "requests", limits.requests_per_minute, 1)
            yield None if limits.tokens_per_minute is None else TokenMeter(self, key.name, limits.tokens_per_minute)
        finally:
            self._release_slot(key.name)

    def _take_slot(self, key: ApiKey) -> None:
        quota = key.limits.max_concurrent
        count = self._in_flight.get(key.name, 0)
        if quota is not None and count >= quota:
            self.sink.rate_limited(key.name, "concurrent")
            raise RateLimited(
                f"the key {key.name!r} has {count} requests running; its limit is {quota}",
                limit="concurrent",
                quota=quota,
            )
        self._in_flight[key.name] = count + 1

    def _release_slot(self, name: str) -> None:
        count = self._in_flight.get(name, 0) - 1
        if count > 0:
            self._in_flight[name] = count
        else:
            self._in_flight.pop(name, None)

    async def take(self, name: str, limit: str, quota: int, cost: int, allowance: int = 0) -> None:
        """Take ``cost`` entries from the key's ``limit`` window (``quota + allowance`` in it at most), or raise
        ``RateLimited`` with what is left and when the oldest entry leaves."""
        storage_key = _storage_key(limit, name)
        try:
            if await self.window.acquire_entry(storage_key, quota + allowance, self.window_s, amount=cost):
                self._storage_ok()
                return
            start, used = await self.window.get_moving_window(storage_key, quota + allowance, self.window_s)
        except StorageError as exc:
            self._storage_error(exc)
            return
        self._storage_ok()
        self.sink.rate_limited(name, limit)
        reset_s = max(1.0, math.ceil(start + self.window_s - self._clock()))
        raise RateLimited(
            f"the key {name!r} is over its {limit} limit ({quota} per minute)",
            limit=limit,
            quota=quota,
            remaining=min(quota, quota + allowance - used),
            reset_s=reset_s,
        )

    async def count(self, name: str, limit: str) -> int:
        """Entries in the key's ``limit`` window now (0 when the storage cannot say: a charge is then checked
        against the plain limit)."""
        try:
            _, used = await self.window.get_moving_window(_storage_key(limit, name), _UNBOUNDED, self.window_s)
        except StorageError as exc:
            self._storage_error(exc)
            return 0
        self._storage_ok()
        return used

    async def add(self, name: str, limit: str, amount: int) -> None:
        """Record ``amount`` entries in a window that never refuses (refunds); a storage error only counts."""
        try:
            await self.window.acquire_entry(_storage_key(limit, name), _UNBOUNDED, self.window_s, amount=amount)
        except StorageError as exc:
            self._count_error(exc)
            return
        self._storage_ok()

    def _storage_error(self, exc: StorageError) -> None:
        self._count_error(exc)
        if self.on_storage_error == "deny":
            raise RateLimitUnavailable(retry_after=5.0) from None

    def _count_error(self, exc: StorageError) -> None:
        self.sink.rate_limit_storage_error()
        if not self._storage_failing:
            self._storage_failing = True
            verdict = "denied" if self.on_storage_error == "deny" else "allowed"
            log.warning(
                "rate-limit storage unreachable; requests are %s until it answers",
                verdict,
                extra={"error": type(exc.storage_error).__name__},
            )

    def _storage_ok(self) -> None:
        if self._storage_failing:
            self._storage_failing = False
            log.warning("rate-limit storage reachable again")


class TokenMeter:
    """One request's token account with its key: ``charge`` at admission, ``refund`` when it is known how much
    of the charge went unused (``gateway.service.TokenBudget``)."""

    def __init__(self, limiter: RateLimiter, name: str, quota: int) -> None:
        self.limiter = limiter
        self.name = name
        self.quota = quota
        self.charged = 0
        self.refunded = 0

    async def charge(self, tokens: int) -> None:
        if tokens > self.quota:
            raise PayloadTooLarge(
                f"the request needs {tokens} tokens (prompt plus max_new_tokens); the key's limit is "
                f"{self.quota} tokens per minute"
            )
        refunded = await self.limiter.count(self.name, "tokens-refund")
        await self.limiter.take(self.name, "tokens", self.quota, tokens, allowance=refunded)
        self.charged += tokens

    async def refund(self, tokens: int) -> None:
        tokens = min(tokens, self.charged - self.refunded)
        if tokens > 0:
            self.refunded += tokens
            await self.limiter.add(self.name, "tokens-refund", tokens)


def _storage_key(limit: str, name: str) -> str:
    return f"gateway/{limit}/{name}"
