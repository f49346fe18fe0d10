"""``/openapi.json`` tells the truth: each route's error statuses with the body its errors have (the gateway's on
native routes, OpenAI's on ``/v1``), the success bodies, and Server-Sent Events where a route streams.
(``tests/e2e/test_schemathesis.py`` checks the real answers against it.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

AppClient = Callable[..., Any]
NATIVE = "#/components/schemas/ErrorBody"
OPENAI = "#/components/schemas/OpenAIErrorBody"


def _schema(answer: dict[str, Any], media_type: str = "application/json") -> Any:
    return answer["content"][media_type]["schema"]


async def test_every_route_documents_its_errors_with_their_body(app_client: AppClient) -> None:
    async with app_client(enable_faults=True) as (client, _):
        spec = (await client.get("/openapi.json")).json()
    expected = {
        ("post", "/generate"): {400, 401, 408, 413, 414, 422, 429, 431, 500, 503, 504},
        ("post", "/generate_stream"): {400, 401, 408, 413, 414, 422, 429, 431, 500, 503, 504},
        ("post", "/"): {400, 401, 408, 413, 414, 422, 429, 431, 500, 503, 504},
        ("post", "/translate"): {400, 401, 408, 413, 414, 422, 429, 431, 500, 503, 504},
        ("post", "/v1/chat/completions"): {400, 401, 404, 408, 413, 414, 429, 431, 500, 503, 504},
        ("post", "/v1/completions"): {400, 401, 404, 408, 413, 414, 429, 431, 500, 503, 504},
        ("get", "/v1/models"): {401, 408, 414, 431, 500, 503},
        ("get", "/health"): {408, 414, 431, 500, 503},
        ("get", "/ready"): {408, 414, 431, 500, 503},
        ("post", "/admin/faults"): {401, 408, 413, 414, 422, 431, 500, 503},
    }
    for (method, path), statuses in expected.items():
        answers = spec["paths"][path][method]["responses"]
        errors = {int(s) for s in answers if int(s) >= 400}
        assert errors == statuses, (path, sorted(errors))
        body = OPENAI if path.startswith("/v1/") else NATIVE
        for status in statuses:
            assert _schema(answers[str(status)]) == {"$ref": body}, (path, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's 422 shape is never answered
    assert set(spec["components"]["schemas"]["ErrorBody"]["required"]) == {"error", "error_type", "request_id"}


async def test_success_bodies_and_event_streams(app_client: AppClient) -> None:
    async with app_client() as (client, _):
        paths = (await client.get("/openapi.json")).json()["paths"]
    ok = {path: paths[path][next(iter(paths[path]))]["responses"]["200"]["content"] for path in paths}
    assert _schema({"content": ok["/generate"]}) == {"$ref": "#/components/schemas/GenerateResponse"}
    assert _schema({"content": ok["/translate"]}) == {"$ref": "#/components/schemas/TranslateResponse"}
    assert _schema({"content": ok["/v1/models"]}) == {"$ref": "#/components/schemas/ModelList"}
    assert set(ok["/generate_stream"]) == {"text/event-stream"}
    for path in ("/", "/v1/chat/completions", "/v1/completions"):
        assert set(ok[path]) == {"application/json", "text/event-stream"}, path
    event = _schema({"content": ok["/generate_stream"]}, "text/event-stream")
    assert event["required"] == ["data"]
