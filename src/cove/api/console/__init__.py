"""The web console at ``/console``: server-rendered pages over the project's responses, conversations
and containers (``docs/console.md``).

A FastAPI app of its own, mounted in Cove's: its errors are pages rather than OpenAI's JSON, every
answer carries its security headers, and none of it is in ``/openapi.json``. It reads through the
same services as the API, always with the signed-in session's project.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cove.api.console import container_pages, pages
from cove.api.console.context import ApiRefused, SignInNeeded, is_htmx, page
from cove.api.console.sessions import session_of
from cove.api.errors import validation_error_body
from cove.errors import CoveError

STATIC = Path(__file__).parent / "static"
_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
            (b"x-frame-options", b"DENY"), (b"cross-origin-opener-policy", b"same-origin")]


class SecurityHeaders:
    """Adds the console's headers to every answer: no sniffing, no referrer to other sites (not
    ``no-referrer``: under it Chromium sends ``Origin: null`` with forms, which the origin check
    refuses), no framing; pages and their fragments are never cached (static files may be). A page
    sets its own CSP (``context.py``); anything else gets the strictest one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/console/static/") or scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [header for header in _HEADERS if header[0] not in names]
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"))
                if not static and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def console_app(cove: FastAPI) -> FastAPI:
    """The console, for mounting at ``/console`` in ``cove``'s app (whose services it reads)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.cove = cove
    app.state.settings = cove.state.settings
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(pages.router)
    app.include_router(container_pages.router)

    @app.exception_handler(SignInNeeded)
    async def sign_in(request: Request, _exc: Exception) -> Response:
        if is_htmx(request):  # a fragment would land inside the page: send the whole page to sign-in
            return Response(status_code=401, headers={"HX-Redirect": "/console/login"})
        return RedirectResponse("/console/login", status_code=303)

    @app.exception_handler(CoveError)
    async def cove_error(request: Request, exc: Exception) -> HTMLResponse:
        assert isinstance(exc, CoveError)
        return page("error.html", code=exc.status_code, status=exc.status_code, message=exc.message,
                    session=await session_of(request))

    @app.exception_handler(ApiRefused)
    async def refused(request: Request, exc: Exception) -> HTMLResponse:
        assert isinstance(exc, ApiRefused)
        return page("error.html", code=exc.status, status=exc.status, message=exc.message,
                    session=await session_of(request))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: Exception) -> HTMLResponse:
        assert isinstance(exc, RequestValidationError)
        message = validation_error_body(list(exc.errors()))["error"]["message"]
        return page("error.html", code=400, status=400, message=message, session=await session_of(request))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: Exception) -> HTMLResponse:
        assert isinstance(exc, HTTPException)
        return page("error.html", code=exc.status_code, status=exc.status_code, message=str(exc.detail),
                    session=await session_of(request))

    return app
