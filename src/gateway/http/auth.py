"""The API-key check, shared by the routes (a guard or dependency) and the load shedding in the middleware."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from pydantic import SecretStr
from starlette.requests import Request

from gateway.errors import Unauthorized

KeyCheck = Callable[[Request], Awaitable[None]]


def key_matches(expected: SecretStr | None, authorization: str, x_api_key: str) -> bool:
    """Whether a request with these header values may use the inference routes (always, with no key set).

    The key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, compared in constant time.
    """
    if expected is None:
        return True
    token = authorization[7:] if authorization.lower().startswith("bearer ") else x_api_key
    return hmac.compare_digest(token.encode(), expected.get_secret_value().encode())


def key_check(expected: SecretStr | None) -> KeyCheck:
    """A route guard that answers 401 unless the request carries the key."""

    async def check(request: Request) -> None:
        headers = request.headers
        if not key_matches(expected, headers.get("authorization", ""), headers.get("x-api-key", "")):
            raise Unauthorized()

    return check
