"""Errors every layer raises, each knowing the OpenAI-style error it becomes on the wire.

    CoveError (500, server_error)
    ├── InvalidRequest (400)            bad parameters, naming the ``param``
    │   ├── Conflict (409)              the request is valid but clashes with the object's state
    │   ├── RequestTooLarge (413)       a body beyond ``COVE_MAX_REQUEST`` / ``COVE_MAX_UPLOAD``
    │   ├── ContextWindowExceeded       the input does not fit the model's context window
    │   └── SearchNotConfigured         web search has no usable engine (``search/base.py``)
    ├── AuthenticationError (401)
    ├── PermissionDenied (403)          the project may not do this at all; keyless mode, a foreign request
    ├── NotFound (404)                  unknown id, or an id of another project
    ├── ContainerLost (410)             the fleet node that held the container died (``sandbox/fleet``)
    ├── SnapshotLost (410)              the fleet node that held the snapshot's files was lost
    ├── TooManyRequests (429)           a capacity cap was reached
    ├── UpstreamError (502)             the model upstream failed; the message says how
    ├── SearchFailed (502)              a web search engine or page read failed (``search/base.py``)
    └── SandboxError (500)              the container engine failed; the message says how
        ├── ImageError                  an image could not be built, imported or found
        ├── DisplayError (502)          a container's display did not start or stopped answering
        ├── PortUnreachable (502)       nothing answers on a previewed port (``service/previews.py``)
        ├── SandboxUnavailable (503)    a fleet node did not answer in time, or another replica holds it
        ├── InitUnresponsive            a container's init stopped answering (``sandbox/linux/process.py``)
        └── SpawnError                  init could not start a command (``sandbox/linux/init_client.py``)

The sandbox, upstreams and store raise these without knowing about HTTP; ``error_body`` is the one
place the wire's ``{"error": {...}}`` is built, for these and for the API's own refusals
(``api/errors.py``, ``api/body_limit.py``).
"""

from __future__ import annotations

from typing import Any


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error JSON: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class CoveError(Exception):
    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_dict(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class InvalidRequest(CoveError, ValueError):
    status_code = 400
    error_type = "invalid_request_error"


class Conflict(InvalidRequest):
    status_code = 409


class RequestTooLarge(InvalidRequest):
    status_code = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than this server accepts ({limit} bytes).",
                         code="request_too_large")


class ContextWindowExceeded(InvalidRequest):
    """Raised before a model is called (``truncation: "disabled"``), or by an upstream that refused."""


class AuthenticationError(CoveError, PermissionError):
    status_code = 401
    error_type = "authentication_error"


class PermissionDenied(CoveError, PermissionError):
    """As OpenAI answers a project that may not use a model: 403, an ``invalid_request_error``."""

    status_code = 403
    error_type = "invalid_request_error"


class NotFound(CoveError, LookupError):
    status_code = 404
    error_type = "invalid_request_error"


class TooManyRequests(CoveError):
    status_code = 429
    error_type = "rate_limit_error"


class UpstreamError(CoveError):
    """The model upstream failed; the message says how (shown in ``response.failed``)."""

    status_code = 502
    error_type = "server_error"


class SandboxError(CoveError, RuntimeError):
    status_code = 500
    error_type = "server_error"


class SandboxUnavailable(SandboxError):
    """The container cannot be reached from here now; 503 because the service, not the request, is at
    fault. Either a fleet node holding (or chosen for) it did not answer within the call's deadline or
    died with the call in flight (the call may or may not have run there, so the client decides whether
    to retry), or, with replicas and no fleet (``docs/replicas.md``), another replica holds it (``holder``,
    named in the message; nothing was run)."""

    status_code = 503

    def __init__(self, message: str, holder: str | None = None) -> None:
        super().__init__(message, code="sandbox_unavailable")
        self.holder = holder
        """The replica that holds it, where known."""


class ContainerLost(CoveError):
    """The container's fleet node died or restarted: its processes and files are gone for good. 410
    rather than 404 so that a client can tell a container that existed and was lost from a wrong id."""

    status_code = 410
    error_type = "invalid_request_error"

    def __init__(self, container_id: str) -> None:
        super().__init__(f"Container {container_id} was lost with the node that ran it; create a new one.",
                         code="container_lost")


class SnapshotLost(CoveError):
    """A snapshot's files were on a fleet node that was lost: nothing can be made from it again. 410, as
    for a lost container, so that a client can tell it from a wrong id."""

    status_code = 410
    error_type = "invalid_request_error"

    def __init__(self, snapshot_id: str, node: str) -> None:
        super().__init__(f"Snapshot {snapshot_id} was lost with fleet node {node}, which held its files; "
                         "delete it and take a new one.", code="snapshot_lost")


class ImageError(SandboxError):
    pass


class DisplayError(SandboxError):
    """A container's display failed: it did not start, or its agent (code in the container, which
    the container may break) stopped answering. The container's doing rather than Cove's, like a
    failing upstream, hence 502; the next use starts the display again."""

    status_code = 502

    def __init__(self, message: str) -> None:
        super().__init__(message, code="display_failed")
