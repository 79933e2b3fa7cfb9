"""Keyless mode's guard: without ``COVE_API_KEYS`` only this machine's own clients are served.

Binding to loopback is not enough on its own. A web page in a browser on this machine can send
requests to 127.0.0.1, and after DNS rebinding its own name points there, so the browser thinks the
API is the page's origin. Such a request still names the page's host in ``Host`` (and ``Origin``),
so keyless requests must name a loopback host in both. The guard sits in the app, not in ``cove
serve``, so the app keeps it under any ASGI server: a server bound elsewhere gets 403 for every
request.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from cove.api.errors import send_error
from cove.config import is_loopback_host
from cove.errors import PermissionDenied


def loopback_host(value: str) -> bool:
    """``Host`` or an origin's authority: a loopback name or address, with or without a port."""
    if any(char in value for char in "@/\\?#"):
        return False
    try:
        host = urlsplit(f"//{value}").hostname
    except ValueError:
        return False
    return host is not None and is_loopback_host(host)


def refusal(scope: Scope) -> PermissionDenied | None:
    """Why this keyless request is refused, or None to serve it."""
    server = scope.get("server")
    if server is None or not is_loopback_host(str(server[0])):
        return PermissionDenied("This server has no API keys (COVE_API_KEYS), so it serves its own machine "
                                "only, over a loopback address.", code="keyless_not_loopback")
    headers = dict(scope["headers"])
    host = headers.get(b"host", b"").decode("latin-1")
    if not loopback_host(host):
        return PermissionDenied(f"Host {host!r} is not a loopback name: without API keys this server answers "
                                "only requests addressed to localhost or a loopback address.",
                                code="keyless_foreign_host")
    origin = headers.get(b"origin")
    if origin is not None:
        parts = urlsplit(origin.decode("latin-1"))
        if parts.scheme not in ("http", "https") or not loopback_host(parts.netloc):
            return PermissionDenied("Requests from web pages of other origins are refused without API keys.",
                                    code="keyless_foreign_origin")
    return None


class LoopbackGuard:
    """Refuses (403) keyless requests that do not come from, and name, this machine."""

    def __init__(self, app: ASGIApp, *, keyless: bool) -> None:
        self.app = app
        self.keyless = keyless

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = refusal(scope) if self.keyless and scope["type"] in ("http", "websocket") else None
        if refused is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_error(send, refused)
