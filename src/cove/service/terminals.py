"""Interactive terminals in containers, as ``GET /v1/containers/{id}/pty`` uses them.

A terminal is a program on a pseudo-terminal the container's init allocates; it runs under the
container's limits like any command (same cgroup, same processes budget), and it goes to the audit
trail like one: what ran, on what size, opened with the key or a token, how it ended, how long, how
many bytes each way. It holds the container through ``ContainerService.use`` for as long as it is
open, so an open terminal keeps its container from idling out, and a stopped container starts again
for it as for a command. At most ``MAX_TERMINALS`` per container at once: each is a process in the
container and two relays here.

Browsers cannot send the key on a WebSocket handshake: they get a pty token (``service/tokens.py``),
bound to project and container, valid ``TOKEN_SECONDS``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from cove.errors import TooManyRequests
from cove.sandbox.base import Terminal, TerminalRequest
from cove.service.containers import ContainerService
from cove.service.tokens import SignedToken, Tokens

MAX_TERMINALS = 8
"""Terminals open on one container at once."""
TOKEN_SECONDS = 60
"""A pty token opens a terminal for this long: enough for a page to connect, short enough that one
copied out of a page or a log is soon worthless. A terminal already open stays open."""


@dataclass
class Session:
    """One open terminal and what crossed it (for the audit trail)."""

    terminal: Terminal
    bytes_in: int = 0
    bytes_out: int = 0
    exit_code: int | None = None


class TerminalService:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self.tokens = Tokens("pty", containers.secrets.sealer, TOKEN_SECONDS,
                             "The pty token is invalid, expired, or for another container: ask for a new one "
                             "(POST /v1/containers/{id}/pty/token with the API key).", code="invalid_pty_token")
        self._open: Counter[str] = Counter()

    async def token(self, project: str, container_id: str) -> SignedToken:
        """A pty token, for a container of the project only (else 404)."""
        await self.containers.get(project, container_id)
        return self.tokens.make(project, container_id)

    @asynccontextmanager
    async def open(self, project: str, container_id: str, request: TerminalRequest,
                   via: Literal["api_key", "token"]) -> AsyncIterator[Session]:
        """A new terminal, ended and audited on leaving; refused past ``MAX_TERMINALS``."""
        await self.containers.get(project, container_id)  # a foreign id is a 404 before the count says anything
        if self._open[container_id] >= MAX_TERMINALS:
            raise TooManyRequests(f"Container '{container_id}' has {MAX_TERMINALS} terminals open already; "
                                  "close one first.", code="too_many_terminals")
        self._open[container_id] += 1
        started = time.monotonic()
        try:
            async with self.containers.use(project, container_id) as sandbox:
                session = Session(await sandbox.terminal(request))
                try:
                    yield session
                finally:
                    await session.terminal.close()
                    if self.containers.audit is not None:
                        self.containers.audit.record(project, container_id, "terminal", {
                            "command": request.command, "cols": request.cols, "rows": request.rows, "via": via,
                            "exit_code": session.exit_code,
                            "duration_ms": round((time.monotonic() - started) * 1000, 1),
                            "bytes_in": session.bytes_in, "bytes_out": session.bytes_out})
        finally:
            self._open[container_id] -= 1
            if not self._open[container_id]:
                del self._open[container_id]
