"""The API-key check, shared by the inference routes and the load shedding in the middleware."""

from __future__ import annotations

import hmac

from pydantic import SecretStr


def key_matches(expected: SecretStr | None, authorization: str, x_api_key: str) -> bool:
    """Whether a request with these header values may use the inference routes (always, with no key set).

    The key comes as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, compared in constant time.
    """
    if expected is None:
        return True
    token = authorization[7:] if authorization.lower().startswith("bearer ") else x_api_key
    return hmac.compare_digest(token.encode(), expected.get_secret_value().encode())
