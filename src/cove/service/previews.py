"""Preview URLs: a web app listening on a port inside a container, opened from outside.

``/v1/containers/{id}/ports/{port}/...`` reaches ``127.0.0.1:port`` in the container's own network
namespace (``Sandbox.connect_port``): the address is the container's loopback, so no request can be
turned towards the host or another container. It opens with the API key, or with a preview token in
the path (``/ports/{port}/~{token}/...``, from ``POST /v1/containers/{id}/ports/{port}/url``) so a
browser can follow the app's relative links; a token names project, container and port
(``service/tokens.py``) and lasts ``expires_in`` seconds.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cove.errors import InvalidRequest, SandboxError
from cove.service.containers import ContainerService
from cove.service.tokens import SignedToken, Tokens

DEFAULT_SECONDS = 3600
MAX_SECONDS = 7 * 24 * 3600


class PortUnreachable(SandboxError):
    """Nothing answers on the port inside the container (nothing listens, or it closed on us): the
    container's doing, hence 502, as for a failing upstream."""

    status_code = 502

    def __init__(self, message: str) -> None:
        super().__init__(message, code="port_unreachable")


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise InvalidRequest("Invalid 'port': expected 1 to 65535.", param="port", code="invalid_value")
    return port


class PreviewService:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self.tokens = Tokens("preview", DEFAULT_SECONDS, "The preview URL is invalid, expired, or for another "
                             "container or port: ask for a new one (POST /v1/containers/{id}/ports/{port}/url "
                             "with the API key).", code="invalid_preview_token")

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
    async def connect(self, project: str, container_id: str, port: int) -> AsyncIterator[socket.socket]:
        """A connection to the port in the container, which is held (kept from expiring, started if
        stopped) while it is open; closed on leaving."""
        check_port(port)
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


def subject(container_id: str, port: int) -> str:
    return f"{container_id}:{port}"
