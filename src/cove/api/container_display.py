"""Cove extensions for a container's display: ``/computer`` (actions, then a settled screenshot),
``/screenshot``, view tokens, and the live view page (noVNC over the ``/display`` WebSocket,
``api/display_socket.py``)."""

from __future__ import annotations

import base64
import html
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from cove.api.auth import project_of
from cove.errors import NotFound
from cove.sandbox.base import Screen
from cove.service.displays import DisplayService

router = APIRouter(prefix="/v1/containers", tags=["containers"])
Project = Annotated[str, Depends(project_of)]


class ComputerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actions: list[Any] = Field(description="OpenAI's computer actions, in order (each checked against the SDK's "
                                           "types: a bad one is a 400 naming `actions[i]`).")
    environment: Literal["browser", "linux", "ubuntu", "windows", "mac"] | None = None
    display_width: int | None = None
    display_height: int | None = None


def _service(request: Request) -> DisplayService:
    service: DisplayService = request.app.state.displays
    return service


@router.post("/{container_id}/computer")
async def computer(container_id: str, body: ComputerRequest, request: Request, project: Project) -> dict[str, Any]:
    """Performs the actions on the container's display (started on first use with the size and
    environment given, else the defaults) and answers with the screen once it settled."""
    screen = None
    if body.environment is not None or body.display_width is not None or body.display_height is not None:
        default = Screen()
        screen = Screen(default.width if body.display_width is None else body.display_width,
                        default.height if body.display_height is None else body.display_height,
                        body.environment or default.environment)
    png = await _service(request).act(project, container_id, body.actions, screen)
    return {"object": "container.computer", "screenshot": {
        "type": "computer_screenshot", "image_url": "data:image/png;base64," + base64.b64encode(png).decode()}}


@router.get("/{container_id}/screenshot", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "The screen now (PNG)."}})
async def screenshot(container_id: str, request: Request, project: Project) -> Response:
    """The screen as it is now, without waiting for it to settle (a display not started yet starts
    with the defaults)."""
    png = await _service(request).screenshot(project, container_id)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


class DisplayToken(BaseModel):
    object: Literal["container.display_token"] = "container.display_token"
    token: str
    expires_at: int
    view_url: str
    """The live view page with this token: a link for a person's browser (which cannot send the key)."""


@router.post("/{container_id}/display/token")
async def display_token(container_id: str, request: Request, project: Project) -> DisplayToken:
    """A short-lived token for the live view of this container (``/display?token=``, ``/display/view?token=``)."""
    await _service(request).start(project, container_id)
    token = _service(request).tokens.make(project, container_id)
    return DisplayToken(token=token.token, expires_at=token.expires_at,
                        view_url=f"/v1/containers/{container_id}/display/view?token={token.token}")


@router.get("/{container_id}/display/view", response_class=HTMLResponse)
async def display_view(container_id: str, request: Request, token: str | None = None,
                       view_only: bool = False) -> HTMLResponse:
    """The live view page: noVNC connected to ``/display`` with a view token; a person can watch,
    or take over with mouse and keyboard. Opened with the key (header: the page gets a fresh token)
    or a view token (query). ``view_only`` makes the page send no input: a guard against a stray
    click while watching, not a permission (the token itself opens input too)."""
    service = _service(request)
    project = service.tokens.project_of(token, container_id) if token is not None else await project_of(request)
    novnc = request.app.state.settings.novnc_dir
    if not (novnc / "core" / "rfb.js").is_file():
        raise NotFound(f"The live view needs noVNC's files, and {novnc} has none (no core/rfb.js): install "
                       "Debian's novnc package (make setup does) or set COVE_NOVNC_DIR.", code="novnc_missing")
    await service.start(project, container_id)
    # A page opened by a token embeds that token, never a fresh one: reloading the link cannot outlive
    # it, so a token copied out of a log or a shared URL opens the view for its few minutes, no longer.
    embedded = token if token is not None else service.tokens.make(project, container_id).token
    return HTMLResponse(view_page(container_id, embedded, view_only),
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def view_page(container_id: str, token: str, view_only: bool = False) -> str:
    """The page: noVNC's RFB module on a full-window canvas, connecting to this container's display
    on the page's own host (``wss:`` behind TLS)."""
    path = json.dumps(f"/v1/containers/{container_id}/display?token={token}").replace("<", "\\u003c")
    title = html.escape(f"Cove: {container_id}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>html, body {{ margin: 0; height: 100%; background: #222; }} #screen {{ height: 100%; }}
#status {{ position: fixed; top: 0; right: 0; padding: 2px 8px; font: 12px sans-serif; color: #fff;
background: rgba(0, 0, 0, .6); }}</style></head>
<body><div id="status">connecting</div><div id="screen"></div>
<script type="module">
import RFB from "/novnc/core/rfb.js";
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const rfb = new RFB(document.getElementById("screen"), scheme + "//" + location.host + {path},
                    {{wsProtocols: ["binary"]}});
rfb.scaleViewport = true;
rfb.viewOnly = {json.dumps(view_only)};
const status = document.getElementById("status");
rfb.addEventListener("connect", () => {{ status.textContent = "live"; }});
rfb.addEventListener("disconnect", () => {{ status.textContent = "disconnected"; }});
</script></body></html>
"""
