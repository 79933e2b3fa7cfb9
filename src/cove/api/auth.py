"""API keys to projects. Every object belongs to the project of the key that made it."""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

from cove.errors import AuthenticationError

OPEN_PROJECT = "default"


async def project_of(request: HTTPConnection) -> str:
    """FastAPI dependency: the caller's project, from ``Authorization: Bearer <key>``; also the check
    on a WebSocket's handshake (``api/responses_socket.py``). A coroutine although it never waits:
    FastAPI runs a plain function dependency in its thread pool, a hand-over to a thread and back on
    every request for a few microseconds of work."""
    keys: dict[str, str] = request.app.state.settings.keys
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not keys:
        # Only possible on a loopback bind (checked at start-up): any key, one project.
        return OPEN_PROJECT
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("You didn't provide an API key. Use 'Authorization: Bearer <key>'.",
                                  code="missing_api_key")
    project = project_for_key(keys, token)
    if project is None:
        raise AuthenticationError("Incorrect API key provided.", code="invalid_api_key")
    return project


def project_for_key(keys: dict[str, str], key: str) -> str | None:
    """The project of ``key`` among the configured ``keys`` (any key on a keyless server), compared
    in constant time; None for a key that is not one of them. The console's sign-in checks with it."""
    if not keys:
        return OPEN_PROJECT
    for known, project in keys.items():
        if hmac.compare_digest(known.encode(), key.strip().encode()):
            return project
    return None
