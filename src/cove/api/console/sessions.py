"""The console's sign-in sessions: the API key stays on the server, the browser holds a random id.

The id travels only in a cookie that scripts cannot read (``HttpOnly``), that no other site's page
can make the browser send (``SameSite=Strict``) and that only ``/console`` receives; the key itself
is never in a page, a URL or a cookie. Each session has its own CSRF token, which every form and
htmx request sends back (``X-CSRF-Token`` or a ``csrf`` field), and state-changing requests must
also come from the console's own origin (``Origin``/``Referer``): three locks, any one enough.

Sessions live in the store (``service/console_sessions.py``), so a browser may land on any replica and a
restart signs nobody out; a session whose key the server no longer accepts for its project (the key
was removed or moved to another project) is signed out on its next request.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

from cove.api.auth import project_for_key
from cove.errors import PermissionDenied
from cove.service.console_sessions import ConsoleSession, ConsoleSessions

COOKIE = "cove_console"


def store(request: Request) -> ConsoleSessions:
    found: ConsoleSessions = request.app.state.cove.state.console_sessions
    return found


async def session_of(request: Request) -> ConsoleSession | None:
    """The request's live session, or None (no cookie, unknown, signed out, expired, or its key no
    longer this server's key for its project)."""
    session_id = request.cookies.get(COOKIE)
    session = await store(request).find(session_id)
    if session is not None and project_for_key(request.app.state.settings.keys, session.key) != session.project:
        await store(request).close(session_id)
        return None
    return session


def check_origin(request: Request) -> None:
    """A state-changing request must come from a page of this server: ``Origin`` (or, when a browser
    sends none, ``Referer``) must name the host the request was sent to. This also guards the sign-in
    form, which no session protects yet."""
    source = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host", "")
    if source is None or source == "null" or urlsplit(source).netloc != host:
        raise PermissionDenied("Console forms are accepted from the console's own pages only.",
                               code="console_foreign_origin")


def check_csrf(session: ConsoleSession, token: str | None) -> None:
    if token is None or not secrets.compare_digest(token.encode(), session.csrf.encode()):
        raise PermissionDenied("The form's CSRF token is missing or stale: reload the page.", code="console_csrf")
