"""Refuses JSON bodies carrying lone UTF-16 surrogates (``"\\ud800"``), before any handler runs.

JSON allows the escape and Python decodes it to a string no UTF-8 encoder accepts, so such text
would get past validation in free-form fields (input, metadata, commands) and fail later: while
writing to the store or a container, or, once stored, on every read of the object."""

from __future__ import annotations

import json
import re

from fastapi import Request

from cove.errors import InvalidRequest

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""Cheap pre-check: only bodies with a surrogate escape (valid pairs included) are looked at closely."""


async def refuse_lone_surrogates(request: Request) -> None:
    """App-wide dependency; reuses the body FastAPI already read and parsed (Starlette caches both)."""
    if request.method not in ("POST", "PUT", "PATCH") or "json" not in request.headers.get("content-type", ""):
        return
    if not _SURROGATE_ESCAPE.search(await request.body()):
        return
    try:
        json.dumps(await request.json(), ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise InvalidRequest("The request body contains a lone UTF-16 surrogate escape, which is not text.",
                             code="invalid_unicode") from exc
    except ValueError:  # not JSON at all: FastAPI already answered that, or the route takes no JSON
        return
