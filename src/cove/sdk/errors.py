"""What the SDK raises: the server's OpenAI-style errors as exceptions, by status, and a command that failed.

Names follow E2B's SDK (``SandboxException`` there, ``SandboxError`` here), so a port changes one word.
"""

from __future__ import annotations

from typing import Any


class SandboxError(Exception):
    """Anything the SDK raises on purpose."""


class APIError(SandboxError):
    """The server answered with an error: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, type: str | None = None, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    @classmethod
    def of(cls, status: int, body: Any) -> APIError:
        """The exception for an answer, its class chosen by status (``_BY_STATUS``)."""
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            error = {"message": str(body)[:500] or f"HTTP {status}"}
        kind = _BY_STATUS.get(status, APIError)
        return kind(status, str(error.get("message")), type=error.get("type"), code=error.get("code"),
                    param=error.get("param"))


class InvalidRequestError(APIError):
    """400: a bad parameter (``param`` names it)."""


class AuthenticationError(APIError):
    """401: no key, or not a key the server knows."""


class PermissionDeniedError(APIError):
    """403: what this project may not do at all."""


class NotFoundError(APIError):
    """404: an unknown id, or another project's."""


class ConflictError(APIError):
    """409: e.g. a container that expired."""


class RateLimitError(APIError):
    """429: capacity, or a project quota (``code == "quota_exceeded"``)."""


class ServerError(APIError):
    """5xx: the server or its engine failed (or a replica does not hold the container)."""


_BY_STATUS: dict[int, type[APIError]] = {400: InvalidRequestError, 401: AuthenticationError,
                                         403: PermissionDeniedError, 404: NotFoundError, 409: ConflictError,
                                         410: ConflictError, 429: RateLimitError, 500: ServerError,
                                         502: ServerError, 503: ServerError}


class CommandExitError(SandboxError):
    """A command ended with a non-zero exit code or ran out of time (E2B's ``CommandExitException``).

    It carries the whole result, so nothing the command printed is lost by raising.
    """

    def __init__(self, stdout: str, stderr: str, exit_code: int | None, *, timed_out: bool = False) -> None:
        what = "timed out" if timed_out else f"exited with code {exit_code}"
        super().__init__(f"The command {what}: {stderr[-500:]}".rstrip(": "))
        self.stdout, self.stderr, self.exit_code, self.timed_out = stdout, stderr, exit_code, timed_out
