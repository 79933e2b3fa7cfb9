"""Moving bytes once the proxy has said yes: a tunnel both ways, or a connection's requests and their answers.

A forwarded connection carries one request, or several when the client keeps it alive inside an
intercepted tunnel. Both end when either side closes or fails, or when nothing moved either way for
``idle_timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from cove.egress.http1 import Reject, Request
from cove.egress.reader import BUFFER, RequestReader


@dataclass
class _Activity:
    last: float


async def _together(first: Coroutine[Any, Any, None], second: Coroutine[Any, Any, None], *,
                    first_ends: bool) -> BaseException | None:
    """Run both; stop at the first failure (returned), or when ``first`` ends if ``first_ends``."""
    tasks = (asyncio.create_task(first), asyncio.create_task(second))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if not any(task.exception() for task in done) and not (first_ends and tasks[0] in done):
            done, _ = await asyncio.wait(tasks)
        return next((failure for task in done if (failure := task.exception()) is not None), None)
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

    async def forward(self, first: Request, requests: RequestReader, writer: asyncio.StreamWriter,
                      up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
                      following: Callable[[], Awaitable[Request | None]] | None = None) -> None:
        """Send ``first`` (its head already rewritten) with its body and relay the answer until the server
        closes. On a kept-alive connection (``following`` given, None from it ends the connection), each
        next request goes to the same server after the previous body while answers flow back in order.
        Only the request side is parsed; answers are relayed as bytes, and so is everything the client
        sends after a request asking for an upgrade.

        Raises the Reject for a body found malformed, or a following request refused, after a head
        went upstream: the server may be answering by then, so the caller cuts the connection rather
        than answer with a status the client would take for the server's."""
        loop = asyncio.get_running_loop()
        activity = _Activity(loop.time())

        async def send() -> None:
            request = first
            while True:
                up_writer.write(request.upstream_head)
                async for data in requests.body():
                    activity.last = loop.time()
                    up_writer.write(data)
                    await up_writer.drain()
                if request.upgrade is not None:  # a WebSocket (or other) upgrade: from here on, a tunnel
                    up_writer.write(requests.rest())
                    await self._pipe(requests.reader, up_writer, activity, half_close=False)
                    raise ConnectionResetError("the client closed the upgraded connection")
                if not request.keep_alive or following is None:
                    return  # the server closes after its answer, which ends the relay
                next_request = await following()
                if next_request is None:
                    raise ConnectionResetError("the client is done")
                request = next_request

        # The answer is relayed while the body is still being sent, so "100 Continue" reaches the client.
        failure = await _together(self._pipe(up_reader, writer, activity, half_close=False), send(), first_ends=True)
        if isinstance(failure, Reject):
            raise failure

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
