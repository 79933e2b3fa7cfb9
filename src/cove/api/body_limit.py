"""Caps request bodies before anything reads them: uploads are spooled to disk by the multipart
parser, so an unbounded upload could fill it, and a JSON body is held whole in memory.

The larger upload limit applies only where the app parses an upload (a multipart POST to a
container's files); any other route is held to the JSON limit whatever content type it claims.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cove.api.errors import send_error
from cove.errors import RequestTooLarge

_UPLOAD_ROUTE = re.compile(r"/v1/containers/[^/]+/files/?")


class BodyLimit:
    def __init__(self, app: ASGIApp, *, upload_bytes: int, json_bytes: int) -> None:
        self.app = app
        self.upload_bytes = upload_bytes
        self.json_bytes = json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        upload = (scope["method"] == "POST" and _UPLOAD_ROUTE.fullmatch(scope["path"]) is not None
                  and headers.get(b"content-type", b"").startswith(b"multipart/form-data"))
        limit = self.upload_bytes if upload else self.json_bytes
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
