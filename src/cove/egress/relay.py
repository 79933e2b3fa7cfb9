"""Moving bytes once the proxy has said yes: a tunnel both ways, or one request and its response.

Both end when either side closes or fails, or when nothing moved either way for ``idle_timeout``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from cove.egress.http1 import Request

BUFFER = 64 * 1024
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")


@dataclass
class _Activity:
    last: float


async def _together(first: Coroutine[Any, Any, None], second: Coroutine[Any, Any, None], *,
                    first_ends: bool) -> None:
    """Run both; stop at the first failure, or when ``first`` ends if ``first_ends``."""
    tasks = (asyncio.create_task(first), asyncio.create_task(second))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if not any(task.exception() for task in done) and not (first_ends and tasks[0] in done):
            await asyncio.wait(tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Relay:
    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout

    async def tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        activity = _Activity(asyncio.get_running_loop().time())
        await _together(self._pipe(reader, up_writer, activity), self._pipe(up_reader, writer, activity),
                        first_ends=False)

    async def forward(self, first: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
                      following: Callable[[], Awaitable[Request | None]] | None = None) -> None:
        """Send ``first`` (its head already rewritten) with its body and relay the answer until the server
        closes. On a kept-alive connection (``following`` given, None from it ends the connection), each
        next request goes to the same server after the previous body while answers flow back in order.
        Only the request side is parsed; answers are relayed as bytes, and so is everything the client
        sends after a request asking for an upgrade."""
        activity = _Activity(asyncio.get_running_loop().time())

        async def send() -> None:
            request = first
            while True:
                up_writer.write(request.upstream_head)
                await self._send_body(reader, up_writer, request.body_length, activity)
                if request.upgrade is not None:  # a WebSocket (or other) upgrade: from here on, a tunnel
                    await self._pipe(reader, up_writer, activity, half_close=False)
                    raise ConnectionResetError("the client closed the upgraded connection")
                if not request.keep_alive or following is None:
                    return  # the server closes after its answer, which ends the relay
                next_request = await following()
                if next_request is None:
                    raise ConnectionResetError("the client is done")
                request = next_request

        # The answer is relayed while the body is still being sent, so "100 Continue" reaches the client.
        await _together(self._pipe(up_reader, writer, activity, half_close=False), send(), first_ends=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: _Activity,
                    half_close: bool = True) -> None:
        """Copy until EOF (then half-close) or until neither direction moved for ``idle_timeout``."""
        loop = asyncio.get_running_loop()
        while True:
            remaining = activity.last + self.idle_timeout - loop.time()
            if remaining <= 0:
                raise TimeoutError("idle")
            try:
                async with asyncio.timeout(remaining):
                    data = await reader.read(BUFFER)
            except TimeoutError:
                continue
            if not data:
                break
            activity.last = loop.time()
            writer.write(data)
            await writer.drain()
        if half_close and writer.can_write_eof():
            writer.write_eof()

    async def _send_body(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int | None,
                         activity: _Activity) -> None:
        """Copy a request body of ``length`` bytes, or chunk by chunk when it is chunked (None)."""
        loop = asyncio.get_running_loop()

        async def copy(count: int) -> None:
            while count > 0:
                data = await reader.read(min(count, BUFFER))
                if not data:
                    raise asyncio.IncompleteReadError(b"", count)
                count -= len(data)
                activity.last = loop.time()
                writer.write(data)
                await writer.drain()

        if length is not None:
            await copy(length)
            return
        while True:
            line = await reader.readuntil(b"\r\n")
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                raise ValueError("malformed chunk size line")
            writer.write(line)
            size = int(match.group(1), 16)
            if size == 0:
                break
            await copy(size)
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("malformed chunk")
            writer.write(b"\r\n")
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
            writer.write(line)
        writer.write(b"\r\n")
        await writer.drain()
