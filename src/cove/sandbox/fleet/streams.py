"""The replica's side of a fleet container's byte streams and display (``relay.py`` is the node's side).

A stream is opened by one host call (``SandboxHost.open_stream``, which returns a ``Ticket``) and then
is a plain TCP connection to the node's relay that begins with the ticket's token: ``connect_port``
returns that socket as it is; a terminal and a channel read and write it. What is not bytes is a host
call naming the stream: a terminal's resize and its exit code. A display's actions and screenshots are
host calls too (each is one request and one PNG).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from cove.sandbox.base import Channel, Display, Screen, Terminal
from cove.sandbox.fleet.relay import TOKEN_SECONDS, Connection, Ticket, keepalive

WAIT_SECONDS = 7 * 24 * 3600.0
"""A terminal's exit code comes when its program ends, which may be days; a node that dies fails the
call at once (Ray reports the actor gone), so this deadline is only a backstop."""

Call = Callable[[str, tuple[Any, ...], float | None], Awaitable[Any]]
"""Makes one host call (method name, arguments after the incarnation and ids, deadline or None for the
default) with the fleet's deadlines and errors."""


async def connect(ticket: Ticket) -> socket.socket:
    """A connection to the relay, past its token: from here on it is the stream."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        keepalive(sock)
        async with asyncio.timeout(TOKEN_SECONDS):
            await loop.sock_connect(sock, (ticket.ip, ticket.port))
            await loop.sock_sendall(sock, ticket.token.encode("ascii"))
    except BaseException:
        sock.close()
        raise
    return sock


def _quiet(task: asyncio.Future[Any]) -> None:
    """Retrieves a finished task's error so that nobody is told it was never retrieved."""
    if not task.cancelled():
        task.exception()


class _Stream(Connection):
    """A relay connection from the replica's side; closing it is what ends the program on the node (the
    relay closes its end)."""

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            return
        self._writer.write(data)
        with contextlib.suppress(ConnectionError):  # the other end is gone: its read says so
            await self._writer.drain()


class RemoteChannel(_Stream, Channel):
    @classmethod
    async def open(cls, ticket: Ticket) -> RemoteChannel:
        return cls(*await asyncio.open_connection(sock=await connect(ticket)))


class RemoteTerminal(_Stream, Terminal):
    """A terminal on the node: its bytes over the relay, its size and exit code by host calls. A resize
    is sent at once and the next write waits for it, so what is typed after a resize sees the new size."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, call: Call) -> None:
        super().__init__(reader, writer)
        self._call = call
        self._resizes: list[asyncio.Task[Any]] = []

    @classmethod
    async def open(cls, ticket: Ticket, call: Call) -> RemoteTerminal:
        return cls(*await asyncio.open_connection(sock=await connect(ticket)), call)

    def resize(self, cols: int, rows: int) -> None:
        task = asyncio.ensure_future(self._call("resize", (cols, rows), None))
        task.add_done_callback(_quiet)  # a closed terminal's resize does not matter
        self._resizes.append(task)

    async def write(self, data: bytes) -> None:
        resizes, self._resizes = self._resizes, []
        await asyncio.gather(*resizes, return_exceptions=True)
        await super().write(data)

    async def wait(self) -> int:
        code: int = await self._call("wait", (), WAIT_SECONDS)
        return code

    async def close(self) -> None:
        for task in self._resizes:
            task.cancel()
        await super().close()


class RemoteDisplay(Display):
    """A display on the node: each action batch and screenshot one host call."""

    def __init__(self, screen: Screen, call: Call, vnc: Callable[[], Awaitable[Channel]],
                 within: float) -> None:
        self.screen = screen
        self._call, self._vnc, self._within = call, vnc, within

    async def act(self, actions: list[dict[str, Any]]) -> bytes:
        png: bytes = await self._call("act", (actions,), self._within)
        return png

    async def screenshot(self) -> bytes:
        png: bytes = await self._call("screenshot", ([],), self._within)
        return png

    async def vnc(self) -> Channel:
        return await self._vnc()
