"""The error tree (``gateway.errors``): each class's status, ``error_type`` and outcome, and what the breaker counts."""

from __future__ import annotations

import pytest

from gateway.errors import (
    BreakerOpen,
    DeadlineExceeded,
    Draining,
    GatewayError,
    HeadersTooLarge,
    InvalidRequest,
    ModelError,
    NotReady,
    OutOfMemory,
    PayloadTooLarge,
    QueueFull,
    RequestCancelled,
    RequestError,
    Unauthorized,
    WorkerStalled,
    counts_as_failure,
)

# class: (status, error_type, outcome), as the contract's error table and gateway_requests_total's status label
TABLE = {
    GatewayError: (500, "internal_error", "server_error"),
    InvalidRequest: (422, "validation", "client_error"),
    PayloadTooLarge: (413, "payload_too_large", "client_error"),
    HeadersTooLarge: (431, "headers_too_large", "client_error"),
    Unauthorized: (401, "unauthorized", "client_error"),
    QueueFull: (429, "queue_full", "rejected"),
    NotReady: (503, "not_ready", "rejected"),
    Draining: (503, "draining", "rejected"),
    BreakerOpen: (503, "circuit_open", "rejected"),
    DeadlineExceeded: (504, "timeout", "timeout"),
    RequestCancelled: (499, "cancelled", "cancelled"),
    ModelError: (500, "model_error", "server_error"),
    OutOfMemory: (500, "out_of_memory", "server_error"),
    WorkerStalled: (500, "worker_stalled", "server_error"),
}


@pytest.mark.parametrize("cls", TABLE, ids=lambda c: c.__name__)
def test_status_error_type_and_outcome(cls: type[GatewayError]) -> None:
    error = cls()
    assert (error.status_code, error.error_type, error.outcome) == TABLE[cls]
    assert error.message == cls.public_message == str(error)


def test_error_types_are_unique() -> None:
    types = [cls.error_type for cls in TABLE]
    assert len(types) == len(set(types))


def test_bad_input_is_a_request_error_and_never_moves_the_breaker() -> None:
    for cls in (InvalidRequest, PayloadTooLarge, HeadersTooLarge, Unauthorized):
        assert issubclass(cls, RequestError) and 400 <= cls.status_code < 500
        assert not counts_as_failure(cls())


def test_what_the_breaker_counts() -> None:
    assert counts_as_failure(ModelError()) and counts_as_failure(OutOfMemory()) and counts_as_failure(WorkerStalled())
    assert counts_as_failure(DeadlineExceeded(during_generation=True))
    assert not counts_as_failure(DeadlineExceeded())  # passed in the queue: the model was never asked
    for error in (QueueFull(), NotReady(), Draining(), BreakerOpen(), RequestCancelled(), GatewayError()):
        assert not counts_as_failure(error), error
    assert not counts_as_failure(RuntimeError("not a gateway error"))


def test_message_retry_after_and_flags() -> None:
    error = QueueFull(retry_after=1.5)
    assert error.retry_after == 1.5 and error.message == QueueFull.public_message
    assert ModelError("the GPU fell off").message == "the GPU fell off"
    assert DeadlineExceeded(during_generation=True).during_generation and not DeadlineExceeded().during_generation
