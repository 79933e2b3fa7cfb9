"""Every failure leaves the server as OpenAI's error JSON (``cove.errors.error_body``): Cove's own
errors, invalid requests, unknown routes and methods, and anything unexpected (as a 500)."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Send

from cove.errors import CoveError, error_body

log = logging.getLogger(__name__)


def _param(loc: tuple[object, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


async def _cove_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CoveError)
    if exc.status_code >= 500:
        log.error("request failed: %s", exc.message)
    return JSONResponse(exc.to_dict(), status_code=exc.status_code)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    body = validation_error_body(list(exc.errors()))
    return JSONResponse(body, status_code=400)


def validation_error_body(errors: list[Any]) -> dict[str, Any]:
    """The 400 error for a body that failed validation, named by its first error (the WebSocket
    mode answers a bad ``response.create`` with the same error, ``api/responses_socket.py``)."""
    first = errors[0] if errors else {"loc": (), "msg": "Invalid request.", "type": ""}
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        message = "We could not parse the JSON body of your request: it is not valid JSON."
        return error_body(message, "invalid_request_error")
    param = _param(loc)
    if first.get("type") == "extra_forbidden":
        message = f"Unknown parameter: '{param}'."
        code = "unknown_parameter"
    elif first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
        code = "missing_required_parameter"
    else:
        message = f"Invalid value for '{param}': {first.get('msg')}."
        code = "invalid_value"
    return error_body(message, "invalid_request_error", param, code)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code, headers=exc.headers)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("The server had an error while processing your request.", "server_error"),
                        status_code=500)


async def send_error(send: Send, error: CoveError) -> None:
    """Answers with ``error`` from ASGI middleware, where no exception handler runs (body limit, keyless
    guard)."""
    body = json.dumps(error.to_dict()).encode()
    await send({"type": "http.response.start", "status": error.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def install(app: FastAPI) -> None:
    app.add_exception_handler(CoveError, _cove_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
