"""``sbx.pty``: an interactive terminal over ``GET /v1/containers/{id}/pty`` (a WebSocket).

Binary frames are the terminal's raw bytes both ways; text frames are JSON control messages:
``{"type": "resize", "cols", "rows"}`` from here, ``{"type": "exit", "exit_code"}`` from the server,
which then closes. ``websockets`` is imported only when a terminal is opened.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from cove.sdk.connection import Connection
from cove.sdk.errors import APIError
from cove.sdk.models import PtySize

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

DataHandler = Callable[[bytes], Awaitable[None] | None]


class AsyncPtyHandle:
    """One terminal: ``send_stdin``, ``resize``, ``wait()`` for its exit code, ``kill()`` to hang up."""

    def __init__(self, socket: ClientConnection, on_data: DataHandler | None) -> None:
        self._socket, self._on_data = socket, on_data
        self.output = bytearray()
        """Everything the terminal printed so far (also handed to ``on_data`` as it arrives)."""
        self.exit_code: int | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for frame in self._socket:
                if isinstance(frame, bytes):
                    self.output += frame
                    if self._on_data is not None:
                        done = self._on_data(frame)
                        if inspect.isawaitable(done):
                            await done
                else:
                    message = json.loads(frame)
                    if message.get("type") == "exit":
                        self.exit_code = int(message["exit_code"])
        except ConnectionClosed:
            pass

    async def send_stdin(self, data: bytes | str) -> None:
        await self._socket.send(data.encode() if isinstance(data, str) else data)

    async def resize(self, size: PtySize) -> None:
        await self._socket.send(json.dumps({"type": "resize", "cols": size.cols, "rows": size.rows}))

    async def wait(self) -> int | None:
        """The exit code once the terminal's program ends (None if the connection ended without one)."""
        await asyncio.shield(self._reader)
        return self.exit_code

    async def kill(self) -> None:
        """Hangs up: the server ends the terminal's program."""
        await self._socket.close()
        await asyncio.wait([self._reader])


class AsyncPty:
    def __init__(self, connection: Connection, sandbox_id: str) -> None:
        self._connection, self._sandbox_id = connection, sandbox_id

    async def create(self, size: PtySize | None = None, *, command: str | None = None,
                     on_data: DataHandler | None = None) -> AsyncPtyHandle:
        """Opens a terminal running ``command`` (the image's login shell when None)."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        size = size or PtySize()
        query = {"cols": size.cols, "rows": size.rows, **({"command": command} if command else {})}
        url = self._connection.config.ws_url(f"/containers/{self._sandbox_id}/pty?{urlencode(query)}")
        try:
            socket = await connect(url, additional_headers=self._connection.config.headers, max_size=None)
        except InvalidStatus as exc:  # refused before the upgrade: the HTTP error answer (none: no such route)
            status, body = exc.response.status_code, (exc.response.body or b"").decode(errors="replace")
            try:
                answer = json.loads(body)
            except ValueError:
                answer = body or f"HTTP {status}: this server has no terminal route"
            raise APIError.of(status, answer) from None
        return AsyncPtyHandle(socket, on_data)
