"""Pure-ASGI middleware: authentication, deny by default.

With any key configured (``gateway.keys``), every request needs one, whatever its path and method (inference,
``/info``, ``/metrics``, ``/docs``, ``/openapi.json``, ``/status*``, ``/admin/*``, and paths that do not exist:
an unknown path without a key is a 401, so the route list does not leak), except the paths in
``GATEWAY_PUBLIC_ROUTES`` (exact matches; ``/health`` and ``/ready`` by default). It runs before routing and
before load shedding, so a wrong key is a 401 even under overload.

The key comes as ``Authorization: Bearer <key>`` (RFC 7235: the scheme in any case, spaces or tabs around the
value and one or more spaces after the scheme) or ``X-API-Key: <key>``. The key it matched is stored in the scope
(``api_key_of``) for the facade's limits, and its name (never the key) in the access-log record. A failure is
counted by route (``gateway_auth_failures_total``; a path outside the app's routes is ``other``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import Unauthorized
from gateway.keys import ApiKey, KeyRing
from gateway.stats import RequestRecord

__all__ = ["Authentication", "api_key_of", "credentials", "declare_security", "presented_key"]

_OWS = " \t"
SCOPE_KEY = "api_key"


def credentials(authorization: str) -> tuple[str, str] | None:
    """``(scheme lowercased, the rest)`` of an ``Authorization`` value, or None when it has no scheme.

    ``credentials = auth-scheme [ 1*SP ( token68 / #auth-param ) ]`` (RFC 7235 section 2.1), the field value
    without the optional whitespace around it (RFC 7230 section 3.2); tabs are taken as spaces here too.
    """
    value = authorization.strip(_OWS)
    if not value:
        return None
    cut = next((i for i, ch in enumerate(value) if ch in _OWS), len(value))
    return value[:cut].lower(), value[cut:].strip(_OWS)


def presented_key(authorization: str, x_api_key: str) -> str:
    """The key a request presents: a Bearer token, else ``X-API-Key``'s value; empty when it presents none."""
    parsed = credentials(authorization)
    if parsed is not None and parsed[0] == "bearer" and parsed[1]:
        return parsed[1]
    return x_api_key.strip(_OWS)


def api_key_of(request: Request) -> ApiKey | None:
    """The key that authenticated the request (None when no key is configured, or on a public route)."""
    key = request.scope.get("state", {}).get(SCOPE_KEY)
    return key if isinstance(key, ApiKey) else None


class Authentication:
    """401 for any request without a known key, except on the public paths; the key into the scope."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: KeyRing,
        public_paths: Collection[str],
        on_failure: Callable[[str], None],
    ) -> None:
        self.app = app
        self.keys = keys
        self.public_paths = frozenset(public_paths)
        self.on_failure = on_failure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys:  # no websocket routes: the router refuses those itself
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in self.public_paths:
            await self.app(scope, receive, send)
            return
        authorization = x_api_key = ""
        for name, value in scope.get("headers") or []:
            if name == b"authorization" and not authorization:
                authorization = value.decode("latin-1")
            elif name == b"x-api-key" and not x_api_key:
                x_api_key = value.decode("latin-1")
        key = self.keys.identify(presented_key(authorization, x_api_key))
        if key is None:
            self.on_failure(path)
            raise Unauthorized()  # answered by the request context, as every error of an inner middleware
        state = scope.setdefault("state", {})
        state[SCOPE_KEY] = key
        record = state.get("record")
        if isinstance(record, RequestRecord):
            record.key = key.name
        await self.app(scope, receive, send)


_SCHEMES: dict[str, Any] = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def declare_security(schema: dict[str, Any], public_paths: Iterable[str]) -> dict[str, Any]:
    """``schema`` (an OpenAPI document) with the two ways to present a key declared, and required by every
    operation outside ``public_paths`` (either one will do); the public ones say they need none."""
    public = frozenset(public_paths)
    schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(_SCHEMES)
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method in _METHODS and isinstance(operation, dict):
                operation["security"] = [] if path in public else [{"bearerAuth": []}, {"apiKeyHeader": []}]
    return schema
