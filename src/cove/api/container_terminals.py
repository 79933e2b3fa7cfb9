"""Cove extension: pty tokens, for ``GET /v1/containers/{id}/pty`` from a browser
(``api/terminal_socket.py``), which cannot put the key on a WebSocket handshake."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from cove.api.auth import project_of
from cove.service.terminals import TerminalService

router = APIRouter(prefix="/v1/containers", tags=["containers"])
Project = Annotated[str, Depends(project_of)]


class PtyToken(BaseModel):
    object: Literal["container.pty_token"] = "container.pty_token"
    token: str
    expires_at: int


@router.post("/{container_id}/pty/token")
async def pty_token(container_id: str, request: Request, project: Project) -> PtyToken:
    """A token that opens this container's terminal WebSocket (``/pty?token=``) for 60 seconds."""
    service: TerminalService = request.app.state.terminals
    token = await service.token(project, container_id)
    return PtyToken(token=token.token, expires_at=token.expires_at)
