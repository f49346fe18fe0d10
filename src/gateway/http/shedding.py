"""Pure-ASGI middleware: load shedding. While a model's queue is full, an inference request for it is answered
429 from its path alone, before routing, body parsing and validation, so a rejection under overload costs as
little as possible.

It runs after authentication (a caller without a valid key gets its 401 first), and only where the route would
refuse the request with the same 429 whatever its body (``Gateway.refusal``: not while draining, not ready, or
with the breaker not closed, where the route answers as before).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.gateway import Gateway
from gateway.http.routing import RouteTable


class LoadShedding:
    def __init__(self, app: ASGIApp, *, gateway: Gateway, routes: RouteTable) -> None:
        self.app = app
        self.gateway = gateway
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            role = self.routes.shed_role(scope.get("path", ""))
            refusal = None if role is None else self.gateway.refusal(role)
            if refusal is not None:
                raise refusal
        await self.app(scope, receive, send)
