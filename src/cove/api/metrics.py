"""``GET /metrics``: the Prometheus text format, for the operator's scraper only.

Tenants' API keys do not open it: the numbers are the whole server's. With ``COVE_METRICS_TOKEN`` set, a
scraper sends ``Authorization: Bearer <token>`` from anywhere; without it, only a client on this machine
is served (a loopback peer, and no ``Forwarded``/``X-Forwarded-For`` header: a reverse proxy on this
machine would otherwise make every outside client look local).
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from cove.config import Settings, is_loopback_host
from cove.errors import AuthenticationError, PermissionDenied
from cove.telemetry.metrics import exposition

router = APIRouter()

_FORWARDING = ("forwarded", "x-forwarded-for", "x-real-ip")


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    admit(request, request.app.state.settings)
    body, content_type = await exposition(request.headers.get("accept", ""))
    return Response(body, headers={"content-type": content_type})


def admit(request: Request, settings: Settings) -> None:
    """Returns when the caller may read the metrics; else 401 (wrong or missing token) or 403 (not local)."""
    token = settings.metrics_token
    if token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise AuthenticationError("GET /metrics needs the operator's token (COVE_METRICS_TOKEN) as "
                                      "'Authorization: Bearer ...'; API keys do not open it.",
                                      code="invalid_metrics_token")
        return
    client = request.client
    if client is None or not is_loopback_host(client.host) or any(name in request.headers for name in _FORWARDING):
        raise PermissionDenied("GET /metrics is served to this machine only unless COVE_METRICS_TOKEN is set.",
                               code="metrics_loopback_only")
