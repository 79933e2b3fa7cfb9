"""``GET /v1/containers/{id}/pty``: a WebSocket to a pseudo-terminal in the container.

The handshake carries the key (``Authorization: Bearer``) or, from a browser, a pty token in the
query (``?token=``, from ``POST /v1/containers/{id}/pty/token``); the query may set ``cols`` and
``rows`` (default 80 x 24) and ``command`` (default: an interactive shell). A refusal is the HTTP
error the other routes give (400, 401, 404, 409, 429 ``too_many_terminals``), before the upgrade.

Binary frames are raw terminal bytes both ways. Text frames are JSON control messages: the client
sends ``{"type": "resize", "cols", "rows"}``; the server sends ``{"type": "exit", "exit_code"}`` once
the program has ended and its last output has gone out, then closes with 1000. A text frame that is
not a JSON object is a protocol error (close 1007); one of an unknown type is ignored, so clients may
send what later servers understand. The client closing ends the program and everything it started
on the terminal. Each direction waits for the other end, so a relay holds at most one read of each;
a client that leaves output unread for ``STALL_SECONDS`` is dropped (1008).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Literal

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from cove.api.auth import project_of
from cove.errors import CoveError, InvalidRequest
from cove.sandbox.base import TERMINAL_MAX_SIDE, TerminalRequest
from cove.service.terminals import Session, TerminalService

log = logging.getLogger(__name__)

STALL_SECONDS = 10.0
"""How long output waits for the client to read it before the client counts as gone."""
DRAIN_SECONDS = 0.2
"""After the program exits, how long output still on its way (or from its background children, which
may hold the terminal for ever) is forwarded before the exit message."""
CLOSE_SECONDS = 5.0
MAX_COMMAND = 64 * 1024


class ProtocolError(Exception):
    """The client sent a text frame that is not a control message."""


async def serve(websocket: WebSocket) -> None:
    """The route: the project comes from the token or the key, the terminal is started, and only then
    is the upgrade accepted."""
    service: TerminalService = websocket.app.state.terminals
    container_id = websocket.path_params["container_id"]
    token = websocket.query_params.get("token")
    via: Literal["api_key", "token"] = "api_key" if token is None else "token"
    try:
        project = await project_of(websocket) if token is None else service.tokens.project_of(token, container_id)
        request = terminal_request(websocket.query_params.get("cols"), websocket.query_params.get("rows"),
                                   websocket.query_params.get("command"))
        async with service.open(project, container_id, request, via) as session:
            await websocket.accept()
            await _relay(websocket, session)
    except CoveError as exc:
        if websocket.application_state == WebSocketState.CONNECTING:
            await websocket.send_denial_response(JSONResponse(exc.to_dict(), status_code=exc.status_code))
            return
        log.info("a terminal in %s ended: %s", container_id, exc.message)
    if websocket.application_state == WebSocketState.CONNECTED:
        await _close(websocket, 1000)


def terminal_request(cols: str | None, rows: str | None, command: str | None) -> TerminalRequest:
    """The query's terminal, or a 400 naming the parameter."""
    if command is not None and (not command or len(command) > MAX_COMMAND or "\x00" in command):
        raise InvalidRequest(f"Invalid 'command': expected 1 to {MAX_COMMAND} characters, no NUL.",
                             param="command", code="invalid_value")
    return TerminalRequest(command=command, cols=_side("cols", cols, 80), rows=_side("rows", rows, 24))


def _side(name: str, value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, str) and value.isdecimal() and len(value) <= 5:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= TERMINAL_MAX_SIDE:
        return value
    raise InvalidRequest(f"Invalid '{name}': expected an integer from 1 to {TERMINAL_MAX_SIDE}.", param=name,
                         code="invalid_value")


async def _relay(websocket: WebSocket, session: Session) -> None:
    """Copies both ways until the program exits (then drains and says so) or the client leaves."""
    to_client = asyncio.create_task(_to_client(websocket, session))
    to_terminal = asyncio.create_task(_to_terminal(websocket, session))
    exited = asyncio.create_task(session.terminal.wait())
    tasks = [to_client, to_terminal, exited]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if to_client.done() and not to_client.cancelled() and isinstance(to_client.exception(), TimeoutError):
            await _close(websocket, 1008, "The client is not reading the terminal's output.")
            return
        if not exited.done() and not to_terminal.done():  # the terminal's output ended: wait for its program
            await asyncio.wait([to_terminal, exited], return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            session.exit_code = exited.result()
            with contextlib.suppress(Exception):  # TimeoutError: output still coming, or a stalled client
                await asyncio.wait_for(asyncio.shield(to_client), DRAIN_SECONDS)
            if not to_terminal.done() and not (to_client.done() and to_client.exception() is not None):
                to_client.cancel()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(STALL_SECONDS):
                        await websocket.send_text(json.dumps({"type": "exit", "exit_code": session.exit_code}))
                await _close(websocket, 1000)
        elif isinstance(to_terminal.exception(), ProtocolError):
            await _close(websocket, 1007, str(to_terminal.exception()))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _to_terminal(websocket: WebSocket, session: Session) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if (data := message.get("bytes")) is not None:
            session.bytes_in += len(data)
            await session.terminal.write(data)
        elif (text := message.get("text")) is not None:
            _control(session, text)


def _control(session: Session, text: str) -> None:
    try:
        control = json.loads(text)
    except ValueError:
        raise ProtocolError("Text frames must be JSON control messages.") from None
    if not isinstance(control, dict):
        raise ProtocolError("Text frames must be JSON objects.")
    if control.get("type") == "resize":
        try:
            if "cols" not in control or "rows" not in control:
                raise InvalidRequest("A resize needs 'cols' and 'rows'.")
            cols, rows = _side("cols", control["cols"], 0), _side("rows", control["rows"], 0)
        except InvalidRequest as exc:
            raise ProtocolError(exc.message) from None
        session.terminal.resize(cols, rows)


async def _to_client(websocket: WebSocket, session: Session) -> None:
    while data := await session.terminal.read():
        session.bytes_out += len(data)
        try:
            async with asyncio.timeout(STALL_SECONDS):
                await websocket.send_bytes(data)
        except TimeoutError:  # an OSError too: the stalled client is the caller's to drop
            raise
        except (WebSocketDisconnect, RuntimeError, OSError):
            return


async def _close(websocket: WebSocket, code: int, reason: str | None = None) -> None:
    """Sends the close frame if the client makes room for it soon; one that reads nothing more is let
    go of anyway (the server closes the connection when the route returns)."""
    if websocket.application_state != WebSocketState.CONNECTED:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_SECONDS):
            await websocket.close(code, reason)
