"""``GET /status`` (the page for people) and ``GET /status.json`` (its data), over the ``StatusBoard``.

API-key policy: the gateway's (``http.keys``): with a key configured, both need it unless they are in
``GATEWAY_PUBLIC_ROUTES``. ``/status`` is the same static shell for everyone (no data, no key in it), so an
operator may add it to the public routes for a browser to open it without a header: the page then sends the key
it is given in the ``#key=`` fragment or its form, which never leaves the browser except as the
``Authorization`` header of its own ``status.json`` requests; ``/status.json`` keeps needing the key.

Active alerts are read from Alertmanager (``GATEWAY_ALERTMANAGER_URL``) on a worker thread with a short timeout;
when it cannot be read, the document says why in ``alerts.error`` and the answer is still a 200.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from gateway.alerts import ActiveAlert, AlertsUnavailable, fetch_active_alerts
from gateway.http.responses import JSONResponse
from gateway.http.status_page import status_page_html
from gateway.status_board import StatusBoard

__all__ = ["ALERTS_TIMEOUT_S", "status_router"]

log = logging.getLogger("gateway.status")

ALERTS_TIMEOUT_S = 2.0

# The page is self-contained: its inline script and style, and requests to this origin only (status.json).
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_NO_STORE = {"Cache-Control": "no-store"}


async def active_alerts(
    alertmanager_url: str | None, timeout_s: float = ALERTS_TIMEOUT_S
) -> tuple[Sequence[ActiveAlert] | None, str | None]:
    """(alerts, None); (None, None) with no Alertmanager configured; (None, reason) when it cannot be read."""
    if alertmanager_url is None:
        return None, None
    try:
        return await asyncio.to_thread(fetch_active_alerts, alertmanager_url, timeout_s), None
    except AlertsUnavailable as exc:
        return None, str(exc)
    except Exception:  # never a 500 for the page because the pager's API misbehaved
        log.exception("reading active alerts from Alertmanager failed")
        return None, "Alertmanager could not be read"


def status_router(board: StatusBoard, alertmanager_url: str | None) -> APIRouter:
    router = APIRouter()

    @router.get("/status", include_in_schema=False)
    async def status_page() -> HTMLResponse:
        """The status page: a static shell that renders ``status.json`` every few seconds."""
        return HTMLResponse(status_page_html(), headers=_PAGE_HEADERS)

    @router.get("/status.json")
    async def status_document() -> JSONResponse:
        """Overall and per-model health, the window's figures, and active alerts (docs/health.md)."""
        alerts, error = await active_alerts(alertmanager_url)
        return JSONResponse(board.document(alerts, error), headers=_NO_STORE)

    return router
