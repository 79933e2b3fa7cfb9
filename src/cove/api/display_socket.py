"""The live view: ``/v1/containers/{id}/display`` is a WebSocket carrying RFB (VNC) both ways, between
a viewer (noVNC, or any RFB client over WebSocket) and an x11vnc on the container's display.

The handshake carries the key (``Authorization: Bearer``) or, from a browser, which cannot set
headers on a WebSocket, a view token in the query (``service/displays.py``); a refusal is the HTTP
error the other routes give (401, 404, 400 ``no_display``, 429 ``too_many_viewers``), before the
upgrade. Binary frames go to x11vnc as they come; what x11vnc writes goes out in binary frames. Each
direction waits for the other end (a full socket to x11vnc stops reading the viewer, a viewer that
does not read stops reading x11vnc), so a relay holds at most one read of each side; a viewer that
leaves the server's frames unread for ``STALL_SECONDS`` is dropped (close code 1008). Either side
closing ends the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Literal

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from cove.api.auth import project_of
from cove.errors import CoveError
from cove.service.displays import DisplayService, Viewer

log = logging.getLogger(__name__)

STALL_SECONDS = 10.0
"""How long a frame waits for a viewer to read it before the viewer counts as gone."""
CLOSE_SECONDS = 5.0


async def serve(websocket: WebSocket) -> None:
    """The route: the project comes from the token or the key, the RFB connection is opened, and
    only then is the upgrade accepted."""
    service: DisplayService = websocket.app.state.displays
    container_id = websocket.path_params["container_id"]
    token = websocket.query_params.get("token")
    via: Literal["api_key", "token"] = "api_key" if token is None else "token"
    closing: tuple[int, str | None] = (1000, None)
    try:
        project = await project_of(websocket) if token is None else service.tokens.project_of(token, container_id)
        async with service.view(project, container_id, via) as viewer:
            subprotocols = websocket.scope.get("subprotocols") or []
            await websocket.accept(subprotocol="binary" if "binary" in subprotocols else None)
            closing = await _relay(websocket, viewer)
    except CoveError as exc:
        if websocket.application_state == WebSocketState.CONNECTING:
            await websocket.send_denial_response(JSONResponse(exc.to_dict(), status_code=exc.status_code))
            return
        log.info("a live view of %s ended: %s", container_id, exc.message)
    if websocket.application_state == WebSocketState.CONNECTED:  # the view is ended first: no x11vnc waits on this
        await _close(websocket, *closing)


async def _relay(websocket: WebSocket, viewer: Viewer) -> tuple[int, str | None]:
    """Copies both ways until either side closes or the viewer stalls; the close code and reason."""
    tasks = [asyncio.create_task(_to_display(websocket, viewer)), asyncio.create_task(_to_viewer(websocket, viewer))]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if any(isinstance(task.exception(), TimeoutError) for task in done):
            return 1008, "The viewer is not reading the display's frames."
        return 1000, None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _to_display(websocket: WebSocket, viewer: Viewer) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes") or (message.get("text") or "").encode()
        viewer.bytes_in += len(data)
        await viewer.channel.write(data)


async def _to_viewer(websocket: WebSocket, viewer: Viewer) -> None:
    while data := await viewer.channel.read():
        viewer.bytes_out += len(data)
        try:
            async with asyncio.timeout(STALL_SECONDS):
                await websocket.send_bytes(data)
        except TimeoutError:  # an OSError too (3.11): not a gone viewer but a stalled one, closed with 1008
            raise
        except (WebSocketDisconnect, RuntimeError, OSError):
            return


async def _close(websocket: WebSocket, code: int, reason: str | None = None) -> None:
    """Sends the close frame if the viewer makes room for it soon; one that reads nothing more is let
    go of anyway (the server closes the connection when the route returns)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_SECONDS):
            await websocket.close(code, reason)
