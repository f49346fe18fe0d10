"""The gateway's error tree. Each class carries the ``error_type`` used in the JSON body and in logs, the HTTP
status it maps to (applied in exactly one place, ``gateway.http.errors``), and the ``outcome`` used as the
``status`` label of ``gateway_requests_total``.

    GatewayError                      500 server_error
    ├── RequestError                  4xx client_error   bad input; never counted by the breaker
    │   ├── InvalidRequest            422 validation
    │   ├── BadRequest                400 bad_request
    │   ├── PayloadTooLarge           413 payload_too_large
    │   ├── HeadersTooLarge           431 headers_too_large
    │   ├── URITooLong                414 uri_too_long
    │   ├── RequestTimeout            408 request_timeout   (the connection is closed after it)
    │   ├── Unauthorized              401 unauthorized
    │   └── ModelNotFound             404 model_not_found   (OpenAI routes with strict model names)
    ├── Rejected                      admission refused without touching the model
    │   ├── QueueFull                 429 queue_full        (Retry-After)
    │   ├── RateLimited               429 rate_limited      (Retry-After; a key's requests, tokens or concurrency)
    │   ├── RateLimitUnavailable      503 rate_limit_unavailable  (storage unreachable, with on-error "deny")
    │   ├── NotReady                  503 not_ready         (Retry-After)
    │   ├── Draining                  503 draining          (Retry-After)
    │   ├── BreakerOpen               503 circuit_open      (Retry-After)
    │   └── TooManyConnections        503 too_many_connections (Retry-After; the connection is closed after it)
    ├── DeadlineExceeded              504 timeout           counted by the breaker when it passed mid-generation
    ├── RequestCancelled              499 cancelled         the client went away
    └── ModelError                    500 model_error       counted by the breaker
        ├── OutOfMemory               500 out_of_memory     retried in halves, a lone row once others left
        └── WorkerStalled             500 worker_stalled    the watchdog replaced the worker
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    """Base of every error the gateway answers with a JSON body."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"
    outcome: ClassVar[str] = "server_error"
    counts_for_breaker: ClassVar[bool] = False
    public_message: ClassVar[str] = "internal error"
    closes_connection: ClassVar[bool] = False  # answered with ``Connection: close``

    def __init__(
        self, message: str | None = None, *, retry_after: float | None = None, param: str | None = None
    ) -> None:
        super().__init__(message or self.public_message)
        self.message = message or self.public_message
        self.retry_after = retry_after
        self.param = param  # the request field at fault, when there is one (OpenAI's error ``param``)


class RequestError(GatewayError):
    status_code = 422
    error_type = "validation"
    outcome = "client_error"
    public_message = "invalid request"


class InvalidRequest(RequestError):
    pass


class BadRequest(RequestError):
    """A well-formed request the model cannot serve as asked (no chat template, say)."""

    status_code = 400
    error_type = "bad_request"


class PayloadTooLarge(RequestError):
    status_code = 413
    error_type = "payload_too_large"
    public_message = "payload too large"


class HeadersTooLarge(RequestError):
    status_code = 431
    error_type = "headers_too_large"
    public_message = "request headers too large"


class URITooLong(RequestError):
    status_code = 414
    error_type = "uri_too_long"
    public_message = "the request target is too long"


class RequestTimeout(RequestError):
    """The request's head or body did not arrive in time."""

    status_code = 408
    error_type = "request_timeout"
    public_message = "the request did not arrive in time"
    closes_connection = True


class Unauthorized(RequestError):
    status_code = 401
    error_type = "unauthorized"
    public_message = "missing or invalid API key"


class ModelNotFound(RequestError):
    status_code = 404
    error_type = "model_not_found"
    public_message = "the model does not exist"


class Rejected(GatewayError):
    status_code = 503
    error_type = "rejected"
    outcome = "rejected"
    public_message = "request rejected"


class QueueFull(Rejected):
    status_code = 429
    error_type = "queue_full"
    public_message = "the admission queue is full; retry later"


class RateLimited(Rejected):
    """A key used up one of its limits: ``limit`` is ``requests``, ``tokens`` or ``concurrent``; ``quota`` that
    limit, ``remaining`` what is left of it, ``reset_s`` seconds until the window frees room (at least 1)."""

    status_code = 429
    error_type = "rate_limited"
    public_message = "rate limit exceeded; retry later"

    def __init__(
        self, message: str | None = None, *, limit: str, quota: int, remaining: int = 0, reset_s: float = 1.0
    ) -> None:
        super().__init__(message, retry_after=max(1.0, reset_s))
        self.limit = limit
        self.quota = quota
        self.remaining = max(0, remaining)
        self.reset_s = max(1.0, reset_s)


class RateLimitUnavailable(Rejected):
    error_type = "rate_limit_unavailable"
    public_message = "the rate-limit storage is unreachable; retry later"


class NotReady(Rejected):
    error_type = "not_ready"
    public_message = "the model is not ready"


class Draining(Rejected):
    error_type = "draining"
    public_message = "the gateway is shutting down"


class BreakerOpen(Rejected):
    error_type = "circuit_open"
    public_message = "the model is failing; the circuit breaker is open"


class TooManyConnections(Rejected):
    error_type = "too_many_connections"
    public_message = "too many open connections; retry later"
    closes_connection = True


class DeadlineExceeded(GatewayError):
    status_code = 504
    error_type = "timeout"
    outcome = "timeout"
    public_message = "the request's deadline passed before it finished"

    def __init__(self, message: str | None = None, *, during_generation: bool = False) -> None:
        super().__init__(message)
        self.during_generation = during_generation


class RequestCancelled(GatewayError):
    status_code = 499
    error_type = "cancelled"
    outcome = "cancelled"
    public_message = "the client cancelled the request"


class ModelError(GatewayError):
    error_type = "model_error"
    counts_for_breaker = True
    public_message = "the model failed to generate"


class OutOfMemory(ModelError):
    error_type = "out_of_memory"
    public_message = "the model ran out of memory"


class WorkerStalled(ModelError):
    error_type = "worker_stalled"
    public_message = "the model worker stalled and was replaced"


def counts_as_failure(error: BaseException) -> bool:
    """Whether an outcome moves the breaker towards open (model faults, hung generation)."""
    if isinstance(error, DeadlineExceeded):
        return error.during_generation
    return isinstance(error, GatewayError) and error.counts_for_breaker


__all__ = [
    "BadRequest",
    "BreakerOpen",
    "DeadlineExceeded",
    "Draining",
    "GatewayError",
    "HeadersTooLarge",
    "InvalidRequest",
    "ModelError",
    "ModelNotFound",
    "NotReady",
    "OutOfMemory",
    "PayloadTooLarge",
    "QueueFull",
    "RateLimitUnavailable",
    "RateLimited",
    "Rejected",
    "RequestCancelled",
    "RequestError",
    "RequestTimeout",
    "TooManyConnections",
    "URITooLong",
    "Unauthorized",
    "WorkerStalled",
    "counts_as_failure",
]
