"""The one route table: which paths serve which model. The app builds its routers from the adapters, and the
access log, the metrics recorder (its bounded ``route`` label) and load shedding all read this table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.gateway import ModelRole


@dataclass(frozen=True)
class InferenceRoute:
    """A POST route that serves a model: metered (request series, INFO access log) and shed under overload."""

    path: str
    role: ModelRole  # the model it serves unless the request names one
    sheddable: bool = True  # False where the body picks the model: its queue is not known from the path


class RouteTable:
    def __init__(self, routes: Iterable[InferenceRoute]) -> None:
        self._routes = {route.path: route for route in routes}
        self._roles = {route.path: route.role for route in self._routes.values()}

    def role(self, path: str) -> ModelRole | None:
        """The model role of an inference path, or None for any other path (probes, scrapes, admin)."""
        return self._roles.get(path)

    def shed_role(self, path: str) -> ModelRole | None:
        """The model whose full queue refuses a request to ``path`` before it is parsed, or None."""
        route = self._routes.get(path)
        return route.role if route is not None and route.sheddable else None

    @property
    def metered(self) -> frozenset[str]:
        """The paths counted in the request metrics; others (``/health``, ``/metrics``) log at DEBUG only."""
        return frozenset(self._roles)


ROUTES = RouteTable(
    [
        InferenceRoute("/generate", ModelRole.GENERATION),
        InferenceRoute("/generate_stream", ModelRole.GENERATION),
        InferenceRoute("/", ModelRole.GENERATION),
        InferenceRoute("/translate", ModelRole.TRANSLATION),
        InferenceRoute("/v1/chat/completions", ModelRole.GENERATION, sheddable=False),
        InferenceRoute("/v1/completions", ModelRole.GENERATION, sheddable=False),
    ]
)
