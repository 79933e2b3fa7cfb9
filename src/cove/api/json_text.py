"""Refuses JSON bodies carrying lone UTF-16 surrogates (``"\\ud800"``), before any handler runs.

JSON allows the escape and Python decodes it to a string no UTF-8 encoder accepts, so such text
would get past validation in free-form fields (input, metadata, commands) and fail later: while
writing to the store or a container, or, once stored, on every read of the object."""

from __future__ import annotations

import json
import re

from fastapi import Request

from cove.agent.request import INLINE_BYTES, sized
from cove.errors import InvalidRequest

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""Cheap pre-check: only bodies with a surrogate escape (valid pairs included) are parsed to look closer."""


async def refuse_lone_surrogates(request: Request) -> None:
    """App-wide dependency. Starlette caches the body it reads, so the route reads it again for free."""
    if request.method not in ("POST", "PUT", "PATCH") or "json" not in request.headers.get("content-type", ""):
        return
    await check_json_text(await request.body())


async def check_json_text(body: bytes) -> None:
    """Refuses one JSON text (a body, or a WebSocket message) carrying a lone surrogate."""
    if await sized(len(body) <= INLINE_BYTES, _has_lone_surrogate, body):
        raise InvalidRequest("The request body contains a lone UTF-16 surrogate escape, which is not text.",
                             code="invalid_unicode")


def _has_lone_surrogate(body: bytes) -> bool:
    if not _SURROGATE_ESCAPE.search(body):
        return False
    try:
        json.dumps(json.loads(body), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    except ValueError:  # not JSON (or not UTF-8): the route answers that as it always does
        return False
    return False
