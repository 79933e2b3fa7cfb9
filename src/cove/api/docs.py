"""The API's own description (``/openapi.json``, ``/docs``, ``/redoc``), behind a key like the API itself.

It names every route and parameter a client could probe, so it is no one's business but the key
holders'; ``COVE_PUBLIC_DOCS=1`` serves it to anyone (FastAPI's own routes). A browser cannot send a
bearer key, so the pages are for keyless (loopback) servers or public docs.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from cove.api.auth import project_of

router = APIRouter(include_in_schema=False, dependencies=[Depends(project_of)])


@router.get("/openapi.json")
async def openapi(request: Request) -> dict[str, Any]:
    return request.app.openapi()  # type: ignore[no-any-return]


@router.get("/docs")
async def swagger(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - Swagger UI")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title} - ReDoc")
