"""``RouteTable`` (``gateway.http.routing``) and the gateway's one table, ``ROUTES``."""

from __future__ import annotations

from gateway.gateway import ModelRole
from gateway.http.routing import ROUTES, InferenceRoute, RouteTable


def test_a_table_answers_roles_shedding_and_metering() -> None:
    table = RouteTable(
        [
            InferenceRoute("/a", ModelRole.GENERATION),
            InferenceRoute("/b", ModelRole.TRANSLATION),
            InferenceRoute("/c", ModelRole.GENERATION, sheddable=False),
        ]
    )
    assert [table.role(p) for p in ("/a", "/b", "/c", "/d")] == [
        ModelRole.GENERATION,
        ModelRole.TRANSLATION,
        ModelRole.GENERATION,
        None,
    ]
    assert [table.shed_role(p) for p in ("/a", "/b", "/c", "/d")] == [
        ModelRole.GENERATION,
        ModelRole.TRANSLATION,
        None,
        None,
    ]
    assert table.metered == frozenset({"/a", "/b", "/c"})


def test_a_later_route_of_the_same_path_replaces_the_earlier() -> None:
    table = RouteTable([InferenceRoute("/a", ModelRole.GENERATION), InferenceRoute("/a", ModelRole.TRANSLATION, False)])
    assert table.role("/a") is ModelRole.TRANSLATION and table.shed_role("/a") is None


def test_the_gateways_routes() -> None:
    assert ROUTES.metered == frozenset(
        {"/", "/generate", "/generate_stream", "/translate", "/v1/chat/completions", "/v1/completions"}
    )
    for path in ("/", "/generate", "/generate_stream"):
        assert ROUTES.role(path) is ModelRole.GENERATION and ROUTES.shed_role(path) is ModelRole.GENERATION
    assert ROUTES.role("/translate") is ModelRole.TRANSLATION
    assert ROUTES.shed_role("/translate") is ModelRole.TRANSLATION
    # /v1 bodies name their model: which queue they would wait in is not known from the path.
    for path in ("/v1/chat/completions", "/v1/completions"):
        assert ROUTES.role(path) is ModelRole.GENERATION and ROUTES.shed_role(path) is None
    for path in ("/health", "/ready", "/info", "/metrics", "/v1/models", "/generate/", "/admin/faults"):
        assert ROUTES.role(path) is None and ROUTES.shed_role(path) is None
