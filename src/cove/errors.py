"""Errors every layer raises, each knowing the OpenAI-style error it becomes on the wire.

    CoveError
    ├── InvalidRequest (400)   bad parameters, naming the ``param``
    │   └── Conflict (409)     the request is valid but clashes with the object's state
    ├── AuthenticationError (401)
    ├── NotFound (404)         unknown id, or an id of another project
    ├── TooManyRequests (429)  a capacity cap was reached
    └── SandboxError (500)     the container engine failed; the message says how
        └── ImageError         an image could not be built, imported or found

The sandbox and store raise these without knowing about HTTP; only ``api/errors.py`` turns them
into responses.
"""

from __future__ import annotations

from typing import Any


class CoveError(Exception):
    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param,
                          "code": self.code}}


class InvalidRequest(CoveError, ValueError):
    status_code = 400
    error_type = "invalid_request_error"


class Conflict(InvalidRequest):
    status_code = 409


class AuthenticationError(CoveError, PermissionError):
    status_code = 401
    error_type = "authentication_error"


class NotFound(CoveError, LookupError):
    status_code = 404
    error_type = "invalid_request_error"


class TooManyRequests(CoveError):
    status_code = 429
    error_type = "rate_limit_error"


class SandboxError(CoveError, RuntimeError):
    status_code = 500
    error_type = "server_error"


class ImageError(SandboxError):
    pass
