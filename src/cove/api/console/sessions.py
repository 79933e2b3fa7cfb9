"""The console's sign-in sessions: the API key stays on the server, the browser holds a random id.

The id travels only in a cookie that scripts cannot read (``HttpOnly``), that no other site's page
can make the browser send (``SameSite=Strict``) and that only ``/console`` receives; the key itself
is never in a page, a URL or a cookie. Each session has its own CSRF token, which every form and
htmx request sends back (``X-CSRF-Token`` or a ``csrf`` field), and state-changing requests must
also come from the console's own origin (``Origin``/``Referer``): three locks, any one enough.

Sessions live in this server process's memory: a restart signs everyone out, and behind several
replicas a browser must stay with the replica it signed in on (or sign in again). Keys change only
with a restart, which ends every session, so a session never outlives its key.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.requests import Request

from cove.errors import PermissionDenied

COOKIE = "cove_console"
LIFETIME = 12 * 3600.0
"""Seconds a session lasts from sign-in, used or not."""
MOST = 10_000
"""Sessions kept at once; beyond it the oldest is signed out (sign-ins cost the server memory)."""


@dataclass
class Session:
    project: str
    key: str
    """The API key it signed in with: the console calls the API for the person with it."""
    expires_at: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class Sessions:
    def __init__(self) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, project: str, key: str) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(project, key, time.time() + LIFETIME)
        self._sessions[session_id] = session
        while len(self._sessions) > MOST:
            self._sessions.popitem(last=False)
        return session_id, session

    def of(self, request: Request) -> Session | None:
        """The request's live session, or None (no cookie, unknown, signed out or expired)."""
        session_id = request.cookies.get(COOKIE)
        session = self._sessions.get(session_id) if session_id else None
        if session is None:
            return None
        if session.expires_at < time.time():
            self._sessions.pop(session_id or "", None)
            return None
        return session

    def close(self, request: Request) -> None:
        self._sessions.pop(request.cookies.get(COOKIE) or "", None)


def check_origin(request: Request) -> None:
    """A state-changing request must come from a page of this server: ``Origin`` (or, when a browser
    sends none, ``Referer``) must name the host the request was sent to. This also guards the sign-in
    form, which no session protects yet."""
    source = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host", "")
    if source is None or source == "null" or urlsplit(source).netloc != host:
        raise PermissionDenied("Console forms are accepted from the console's own pages only.",
                               code="console_foreign_origin")


def check_csrf(session: Session, token: str | None) -> None:
    if token is None or not secrets.compare_digest(token.encode(), session.csrf.encode()):
        raise PermissionDenied("The form's CSRF token is missing or stale: reload the page.", code="console_csrf")
