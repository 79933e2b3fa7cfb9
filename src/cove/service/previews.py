"""Preview URLs: a web app listening on a port inside a container, opened from outside.

``/v1/containers/{id}/ports/{port}/...`` reaches ``127.0.0.1:port`` in the container's own network
namespace (``Sandbox.connect_port``): the address is the container's loopback, so no request can be
turned towards the host or another container. It opens with the API key, or with a preview token in
the path (``/ports/{port}/~{token}/...``, from ``POST /v1/containers/{id}/ports/{port}/url``) so a
browser can follow the app's relative links; a token names project, container and port
(``service/tokens.py``) and lasts ``expires_in`` seconds.

Each request and WebSocket session that reaches a container of its project is in the container's
audit trail (``preview``), as a command is: the port is a way in, so the trail shows who came in
that way (key or token), for what path (never the query or the token) and what crossed.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from cove.errors import CoveError, InvalidRequest, SandboxError, TooManyRequests
from cove.service.containers import ContainerService
from cove.service.tokens import SignedToken, Tokens

DEFAULT_SECONDS = 3600
MAX_SECONDS = 7 * 24 * 3600
MAX_CONNECTIONS = 32
"""Connections (HTTP requests in flight, open WebSockets) to one container's ports at once: each holds
two sockets on the server, and a browser loading a page makes about six."""


class PortUnreachable(SandboxError):
    """Nothing answers on the port inside the container (nothing listens, or it closed on us): the
    container's doing, hence 502, as for a failing upstream."""

    status_code = 502

    def __init__(self, message: str) -> None:
        super().__init__(message, code="port_unreachable")


@dataclass
class Exchange:
    """One proxied request or WebSocket session, as the audit trail keeps it (the API fills in what
    crossed)."""

    method: str
    path: str
    """The app's path, without the query (a token never reaches it: it is cut off before)."""
    via: Literal["api_key", "token"]
    websocket: bool = False
    status: int | None = None
    """The app's status (101 for an accepted WebSocket), or Cove's error's (502: nothing answered)."""
    bytes_in: int = 0
    bytes_out: int = 0


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise InvalidRequest("Invalid 'port': expected 1 to 65535.", param="port", code="invalid_value")
    return port


class PreviewService:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self._open: Counter[str] = Counter()
        self.tokens = Tokens("preview", containers.secrets.sealer, DEFAULT_SECONDS,
                             "The preview URL is invalid, expired, or for another container or port: ask for a new "
                             "one (POST /v1/containers/{id}/ports/{port}/url with the API key).",
                             code="invalid_preview_token")

    async def url_token(self, project: str, container_id: str, port: int, seconds: int) -> SignedToken:
        """A preview token for a container of the project (else 404) and one port."""
        check_port(port)
        if not 1 <= seconds <= MAX_SECONDS:
            raise InvalidRequest(f"Invalid 'expires_in': expected 1 to {MAX_SECONDS} seconds.", param="expires_in",
                                 code="invalid_value")
        await self.containers.get(project, container_id)
        return self.tokens.make(project, subject(container_id, port), seconds)

    def project_of(self, token: str, container_id: str, port: int) -> str:
        return self.tokens.project_of(token, subject(container_id, port))

    @asynccontextmanager
    async def connect(self, project: str, container_id: str, port: int,
                      exchange: Exchange) -> AsyncIterator[socket.socket]:
        """A connection to the port in the container, which is held (kept from expiring, started if
        stopped) while it is open; closed on leaving, and ``exchange`` audited."""
        check_port(port)
        await self.containers.get(project, container_id)  # a foreign id is a 404 before the count says anything
        if self._open[container_id] >= MAX_CONNECTIONS:
            raise TooManyRequests(f"Container '{container_id}' has {MAX_CONNECTIONS} preview connections open "
                                  "already.", code="too_many_preview_connections")
        self._open[container_id] += 1
        started = time.monotonic()
        try:
            async with self.containers.use(project, container_id) as sandbox:
                try:
                    sock = await sandbox.connect_port(port)
                except OSError as exc:
                    raise PortUnreachable(f"Nothing answers on port {port} in container '{container_id}' "
                                          f"({exc.strerror or exc}).") from None
                try:
                    yield sock
                finally:
                    sock.close()
        except CoveError as exc:
            if exchange.status is None:
                exchange.status = exc.status_code
            raise
        finally:
            self._audit(project, container_id, port, exchange, time.monotonic() - started)
            self._open[container_id] -= 1
            if not self._open[container_id]:
                del self._open[container_id]

    def _audit(self, project: str, container_id: str, port: int, exchange: Exchange, seconds: float) -> None:
        if self.containers.audit is not None:
            self.containers.audit.record(project, container_id, "preview", {
                "port": port, "method": exchange.method, "path": exchange.path, "websocket": exchange.websocket,
                "via": exchange.via, "status": exchange.status, "duration_ms": round(seconds * 1000, 1),
                "bytes_in": exchange.bytes_in, "bytes_out": exchange.bytes_out})


def subject(container_id: str, port: int) -> str:
    return f"{container_id}:{port}"
