"""Caps request bodies before anything reads them: uploads are spooled to disk by the multipart
parser, so an unbounded upload could fill it, and a JSON body is held whole in memory.

The upload limits apply only where the app parses an upload (a multipart POST to a container's
files, ``COVE_MAX_UPLOAD``, the console's upload form included, or to ``/v1/files``,
``COVE_MAX_FILE_UPLOAD``); any other route is held to the JSON limit whatever content type it claims.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cove.api.errors import send_error
from cove.errors import RequestTooLarge

_CONTAINER_UPLOAD = re.compile(r"/(v1|console)/containers/[^/]+/files/?")
_FILE_UPLOAD = re.compile(r"/v1/files/?")


class BodyLimit:
    def __init__(self, app: ASGIApp, *, upload_bytes: int, file_bytes: int, json_bytes: int) -> None:
        self.app = app
        self.uploads = ((_CONTAINER_UPLOAD, upload_bytes), (_FILE_UPLOAD, file_bytes))
        self.json_bytes = json_bytes

    def _limit(self, scope: Scope, headers: dict[bytes, bytes]) -> int:
        if scope["method"] == "POST" and headers.get(b"content-type", b"").startswith(b"multipart/form-data"):
            for route, limit in self.uploads:
                if route.fullmatch(scope["path"]) is not None:
                    return limit
        return self.json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit = self._limit(scope, headers)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_error(send, RequestTooLarge(limit))
            return
        seen = 0
        exceeded = False

        async def counted_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                # Frameworks turn errors raised here into their own 400s: end the body instead and
                # answer 413 in place of whatever the app answers to the cut body.
                exceeded = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start":
                await send_error(send, RequestTooLarge(limit))

        await self.app(scope, counted_receive, guarded_send)
