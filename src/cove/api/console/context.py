"""What every console route shares: the signed-in session, the services, pages, and the API called
in-process with the session's key."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import httpx
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from cove.api.console.render import render
from cove.api.console.sessions import session_of
from cove.service.console import ConsoleQueries
from cove.service.console_sessions import ConsoleSession

T = TypeVar("T")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
"""Scripts and styles from the console's own files only, no inline script of any kind, images inline
(screenshots) or its own, requests to this server only (the terminal's WebSocket included)."""
TERMINAL_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
"""The container page: xterm.js's DOM renderer writes its cell metrics and colours into ``<style>``
elements it creates. Styles only: scripts stay the console's own files."""


class SignInNeeded(Exception):
    """No live session: the console answers with its sign-in page."""


class ApiRefused(Exception):
    """The API, called in-process for the person, answered with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def signed_in(request: Request) -> ConsoleSession:
    session = await session_of(request)
    if session is None:
        raise SignInNeeded
    return session


Signed = Annotated[ConsoleSession, Depends(signed_in)]


def service(request: Request, name: str, kind: type[T]) -> T:
    """One of the API's services (``app.state`` of the Cove app the console is mounted in)."""
    found = getattr(request.app.state.cove.state, name)
    assert isinstance(found, kind)
    return found


def queries(request: Request) -> ConsoleQueries:
    found: ConsoleQueries = request.app.state.cove.state.console
    return found


def page(template: str, code: int = 200, csp: str = CSP, **context: Any) -> HTMLResponse:
    return HTMLResponse(render(template, **context), status_code=code, headers={"Content-Security-Policy": csp})


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


async def call_api(request: Request, session: ConsoleSession, method: str, path: str) -> dict[str, Any]:
    """The Cove API called in-process with the session's key, for what other modules own (the
    terminal's token, the display's view token, preview URLs): the console then gets exactly what
    the API grants that key, checks included, and never copies their code."""
    transport = httpx.ASGITransport(app=request.app.state.cove)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=120) as client:
        answer = await client.request(method, path, headers={"Authorization": f"Bearer {session.key}"})
    body: Any = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    if answer.status_code >= 400:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        raise ApiRefused(answer.status_code, str(message or f"{method} {path} answered {answer.status_code}"))
    return body if isinstance(body, dict) else {}
