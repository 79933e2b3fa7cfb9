"""Byte streams between an API replica and a container on a fleet node, off Ray's object path.

A terminal, a port connection, an MCP server's stdio and a display's VNC are long-lived byte streams
both ways; carried as Ray calls, each chunk would be an object in Ray's store and a scheduling round
trip. Instead the node's ``SandboxHost`` runs this relay: one TCP listener on the node's own Ray address
(``ray.util.get_node_ip_address()``: the cluster's private network, never a wildcard), made on first use.

``SandboxHost.open_stream`` opens the container's end first (so a refusal, such as nothing listening on
a port, is that call's error) and registers it here under a fresh random token, returning a ``Ticket``:
address, port, token. The replica connects, sends the token, and from then on bytes are copied both
ways. The relay also serves the replicas' exec sessions (``calls.py``): a ticket whose connection a
``Session`` serves instead of a container's end. Bounds:

- a token is single use and expires after ``TOKEN_SECONDS``: an end nobody came for is closed then;
- a connection that does not send a known token within ``TOKEN_SECONDS`` is dropped;
- at most ``MAX_STREAMS`` ends and sessions (waiting or connected) per host (``TooManyRequests`` past it);
- the replica's end-of-stream (or a reset) ends the stream: the container's end is closed (a terminal's
  program and a channel's process killed), except for a port, whose half-close is passed on and which
  ends once both directions have, or once the app sent nothing for ``HALF_CLOSED_IDLE_SECONDS`` after
  it (an app that never closes cannot hold the stream); the container's end-of-stream is passed on as
  a half-close;
- TCP keep-alive on every relay connection, so a replica's machine that vanishes does not hold an end
  for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cove.errors import TooManyRequests

log = logging.getLogger(__name__)

TOKEN_SECONDS = 5.0
"""How long a ticket's token opens its stream (the replica connects at once: milliseconds)."""
MAX_STREAMS = 512
"""Open ends per node (terminals, port connections, channels, VNC views), waiting or connected."""
HALF_CLOSED_IDLE_SECONDS = 30.0
"""How long a port connection the replica half-closed waits for the app's next bytes before it ends."""
TOKEN_BYTES = 32
"""A token's length on the wire (16 random bytes, hex)."""
CHUNK = 65536
"""Bytes one read of a relay connection takes at most."""
_KEEPALIVE = ((socket.TCP_KEEPIDLE, 30), (socket.TCP_KEEPINTVL, 10), (socket.TCP_KEEPCNT, 3))


@runtime_checkable
class End(Protocol):
    """The container's side of a stream: a ``Terminal``, a ``Channel``, or a port's ``SocketEnd``."""

    async def read(self) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Ticket:
    """Where and how a replica opens the stream it asked for."""

    ip: str
    port: int
    token: str
    stream_id: str
    """Names the stream in later host calls (a terminal's resize and exit code)."""


def keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in _KEEPALIVE:
        sock.setsockopt(socket.IPPROTO_TCP, option, value)


class Connection:
    """One TCP connection's reads (``b""`` once it ended, reset or not) and its closing: what the relay's
    port ends and the replica's streams (``streams.py``) share."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(CHUNK)
        except ConnectionError:
            return b""

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


class SocketEnd(Connection):
    """A connected socket (a port in the container) as an ``End`` that can be half-closed."""

    @classmethod
    async def of(cls, sock: socket.socket) -> SocketEnd:
        return cls(*await asyncio.open_connection(sock=sock))

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    def write_eof(self) -> None:
        if self._writer.can_write_eof() and not self._writer.is_closing():
            self._writer.write_eof()


Session = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
"""What serves a connection that is not a byte stream to a container end (``calls.serve``)."""


@dataclass
class _Stream:
    end: End | Session
    """The container's end, or the session that serves the connection itself."""
    expiry: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    """The task that copies its bytes, or closes it unclaimed."""


class Relay:
    """The node's relay (one per ``SandboxHost``, on the actor's event loop)."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self._server: asyncio.Server | None = None
        self._waiting: dict[str, str] = {}
        """Token -> stream id, for streams whose replica has not connected yet."""
        self.streams: dict[str, _Stream] = {}

    async def _listen(self) -> int:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.ip, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def check_room(self) -> None:
        """Refuses a new stream when ``MAX_STREAMS`` are open (before its end is opened for nothing)."""
        if len(self.streams) >= MAX_STREAMS:
            raise TooManyRequests(f"This fleet node has {MAX_STREAMS} streams open (terminals, port connections, "
                                  "channels); close some first.", code="too_many_streams")

    async def offer(self, end: End | Session) -> Ticket:
        """Registers ``end`` (closing it if the relay filled up meanwhile) and returns the ticket that opens it."""
        try:
            self.check_room()
            port = await self._listen()
        except BaseException:
            await _close(end)
            raise
        token, stream_id = secrets.token_hex(TOKEN_BYTES // 2), secrets.token_hex(16)
        stream = self.streams[stream_id] = _Stream(end)
        self._waiting[token] = stream_id
        stream.expiry = asyncio.get_running_loop().call_later(TOKEN_SECONDS, self._expire, token)
        return Ticket(self.ip, port, token, stream_id)

    def _expire(self, token: str) -> None:
        stream_id = self._waiting.pop(token, None)
        stream = self.streams.get(stream_id) if stream_id is not None else None
        if stream_id is not None and stream is not None:
            log.info("relay stream %s expired unclaimed", stream_id)
            stream.task = asyncio.create_task(self._finish(stream_id))

    async def _finish(self, stream_id: str) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            await _close(stream.end)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            keepalive(sock)
        try:
            async with asyncio.timeout(TOKEN_SECONDS):
                token = (await reader.readexactly(TOKEN_BYTES)).decode("ascii", "replace")
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        stream_id = self._waiting.pop(token, None)
        stream = self.streams.get(stream_id) if stream_id is not None else None
        if stream_id is None or stream is None:
            writer.close()
            return
        if stream.expiry is not None:
            stream.expiry.cancel()
        stream.task = asyncio.current_task()
        try:
            if isinstance(stream.end, End):
                await _pump(stream.end, reader, writer)
            else:
                await stream.end(reader, writer)
        finally:
            writer.close()
            await self._finish(stream_id)

    async def close(self) -> None:
        """Closes every stream (a host that resets: they belonged to its old containers) and the listener."""
        for stream_id, stream in list(self.streams.items()):
            if stream.task is not None and stream.task is not asyncio.current_task():
                stream.task.cancel()
            await self._finish(stream_id)
        self._waiting.clear()
        if self._server is not None:
            self._server.close()
            self._server = None


async def _close(end: End | Session) -> None:
    if isinstance(end, End):
        with contextlib.suppress(Exception):
            await end.close()


async def _pump(end: End, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies both ways until the replica's side ends (for a port: until both sides have), or either
    side fails."""

    async def up() -> None:
        while data := await reader.read(CHUNK):
            await end.write(data)
        if isinstance(end, SocketEnd):  # a port: the app may still answer
            end.write_eof()

    sent = [0]

    async def down() -> None:
        while data := await end.read():
            sent[0] += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()

    upward, downward = asyncio.create_task(up()), asyncio.create_task(down())
    tasks = {upward, downward}
    half_close = isinstance(end, SocketEnd)
    try:
        pending = tasks
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(task.exception() is not None for task in done):
                return
            if upward in done and not half_close:
                return
            if upward in done and pending:  # a half-closed port: the app answers or falls idle
                before = sent[0]
                done, pending = await asyncio.wait(pending, timeout=HALF_CLOSED_IDLE_SECONDS)
                if pending and sent[0] == before:
                    return
                if any(task.exception() is not None for task in done):
                    return
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
