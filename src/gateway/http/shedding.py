"""Pure-ASGI middleware: load shedding. While a model's queue is full, an inference request for it is answered
429 from its path alone, before routing, body parsing and validation, so a rejection under overload costs as
little as possible.

Only for callers with a valid key (the others get their 401 from the route), and only where the route would
refuse the request with the same 429 whatever its body (``Gateway.refusal``: not while draining, not ready, or
with the breaker not closed, where the route answers as before).
"""

from __future__ import annotations

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.gateway import Gateway
from gateway.http.auth import key_matches
from gateway.http.context import first_headers
from gateway.http.routing import RouteTable


class LoadShedding:
    def __init__(self, app: ASGIApp, *, gateway: Gateway, routes: RouteTable, api_key: SecretStr | None) -> None:
        self.app = app
        self.gateway = gateway
        self.routes = routes
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            role = self.routes.shed_role(scope.get("path", ""))
            refusal = None if role is None else self.gateway.refusal(role)
            if refusal is not None:
                headers = first_headers(scope)
                authorization = headers.get(b"authorization", b"").decode("latin-1")
                if key_matches(self.api_key, authorization, headers.get(b"x-api-key", b"").decode("latin-1")):
                    raise refusal
        await self.app(scope, receive, send)
