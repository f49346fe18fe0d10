"""Active alerts from Alertmanager's API v2 (``GET /api/v2/alerts``), for the status page.

Only firing alerts that are neither silenced nor inhibited are asked for. A failure to reach Alertmanager is not
the gateway's failure: ``fetch_active_alerts`` raises ``AlertsUnavailable`` with a short reason, and the status
page shows that reason instead of the list. The fetch blocks (urllib, no extra dependency): call it off the event
loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ActiveAlert", "AlertsUnavailable", "alerts_url", "fetch_active_alerts", "parse_alerts"]

MAX_ALERTS = 50
_SEVERITY_ORDER = {"critical": 0, "warning": 1}


class AlertsUnavailable(Exception):
    """Alertmanager could not be read (unreachable, an error status, not its API's shape)."""


@dataclass(frozen=True)
class ActiveAlert:
    name: str
    severity: str
    model: str | None
    summary: str
    starts_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "severity": self.severity,
            "model": self.model,
            "summary": self.summary,
            "starts_at": self.starts_at,
        }


def alerts_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/api/v2/alerts?active=true&silenced=false&inhibited=false"


def parse_alerts(payload: Any) -> list[ActiveAlert]:
    """The API's list of gettableAlert objects -> the active ones, critical first, then by start time."""
    if not isinstance(payload, list):
        raise AlertsUnavailable("unexpected answer from Alertmanager")
    out = []
    for item in payload:
        if not isinstance(item, Mapping):
            continue
        status = item.get("status") or {}
        if isinstance(status, Mapping) and status.get("state", "active") != "active":
            continue
        labels = item.get("labels") or {}
        annotations = item.get("annotations") or {}
        out.append(
            ActiveAlert(
                name=str(labels.get("alertname", "")),
                severity=str(labels.get("severity", "")),
                model=str(labels["model"]) if "model" in labels else None,
                summary=str(annotations.get("summary", "")),
                starts_at=str(item.get("startsAt", "")),
            )
        )
    out.sort(key=lambda a: (_SEVERITY_ORDER.get(a.severity, 2), a.starts_at, a.name))
    return out[:MAX_ALERTS]


def fetch_active_alerts(base_url: str, timeout_s: float = 2.0) -> list[ActiveAlert]:
    request = urllib.request.Request(alerts_url(base_url), headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read(2_000_000)
    except urllib.error.HTTPError as exc:
        raise AlertsUnavailable(f"Alertmanager answered {exc.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AlertsUnavailable(f"Alertmanager unreachable: {reason}") from None
    try:
        return parse_alerts(json.loads(body))
    except ValueError:
        raise AlertsUnavailable("unexpected answer from Alertmanager") from None


def as_dicts(alerts: Iterable[ActiveAlert]) -> list[dict[str, Any]]:
    return [a.as_dict() for a in alerts]
