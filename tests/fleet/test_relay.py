"""The fleet's relay (``sandbox/fleet/relay.py``) on its own, without Ray: a port's bytes and half-closes
both ways, a program's stream ended by either side, single-use expiring tokens, and the cap. The
container's ends are real: a TCP server for a port, a real process (``cat``, ``sh``) for a program."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from cove.errors import TooManyRequests
from cove.sandbox.fleet import relay as relay_module
from cove.sandbox.fleet.relay import Relay, SocketEnd, Ticket
from cove.sandbox.fleet.streams import RemoteChannel, connect
from tests.polling import eventually_async

IP = "127.0.0.5"
"""The "node's address" of these tests: a loopback address no Ray test uses."""


class ProgramEnd:
    """A real process's stdin and stdout as a relay end, as a channel to a program in a container is."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *argv: str) -> ProgramEnd:
        return cls(await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                        stdout=asyncio.subprocess.PIPE))

    async def read(self) -> bytes:
        assert self.proc.stdout is not None
        return await self.proc.stdout.read(65536)

    async def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


async def _until(check: Callable[[], bool]) -> None:
    await eventually_async(check, timeout=10, what="the relay's streams to settle")


@contextlib.asynccontextmanager
async def _port_through_relay(app: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                              ) -> AsyncIterator[tuple[Relay, Ticket, asyncio.StreamReader, asyncio.StreamWriter]]:
    """A TCP server running ``app`` as a container's port, offered by a relay and connected to as a replica
    would: the relay, the ticket, and the replica's connection."""
    server = await asyncio.start_server(app, IP, 0)
    relay = Relay(IP)
    try:
        port = server.sockets[0].getsockname()[1]
        ticket = await relay.offer(await SocketEnd.of(socket.create_connection((IP, port))))
        reader, writer = await asyncio.open_connection(sock=await connect(ticket))
        yield relay, ticket, reader, writer
    finally:
        await relay.close()
        server.close()
        await server.wait_closed()


def test_a_ports_bytes_and_half_closes_cross_both_ways() -> None:
    async def test() -> None:
        heard = asyncio.get_running_loop().create_future()

        async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.read()  # until the replica's half-close
            heard.set_result(request)
            writer.write(request.upper())
            writer.write_eof()
            await writer.drain()
            writer.close()

        async with _port_through_relay(app) as (relay, ticket, reader, writer):
            assert ticket.ip == IP
            writer.write(b"hello")
            writer.write_eof()
            assert await reader.read() == b"HELLO"  # the app answered after the half-close, then closed
            assert await heard == b"hello"
            writer.close()
            await _until(lambda: not relay.streams)
            with pytest.raises(ConnectionRefusedError):  # the relay listens on its address only
                await asyncio.open_connection("127.0.0.1", ticket.port)

    run(test)


def test_a_half_closed_port_whose_app_falls_silent_is_freed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "HALF_CLOSED_IDLE_SECONDS", 0.3)

    async def test() -> None:
        done = asyncio.Event()

        async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # the replica's half-close; then it neither answers nor closes
            await done.wait()
            writer.close()

        async with _port_through_relay(app) as (relay, _ticket, reader, writer):
            try:
                writer.write_eof()
                assert await reader.read() == b""  # the relay gave up on the silent app...
                assert not relay.streams  # ...and freed the stream, the app's connection still open
                writer.close()
            finally:
                done.set()

    run(test)


def test_a_programs_stream_ends_with_either_side() -> None:
    async def test() -> None:
        relay = Relay(IP)
        try:
            cat = await ProgramEnd.start("cat")
            channel = await RemoteChannel.open(await relay.offer(cat))
            await channel.write(b"ping")
            assert await channel.read() == b"ping"
            await channel.close()  # the replica leaves: the program is ended and the stream freed
            await _until(lambda: cat.proc.returncode is not None and not relay.streams)

            said = await ProgramEnd.start("sh", "-c", "echo done")
            channel = await RemoteChannel.open(await relay.offer(said))
            assert await channel.read() == b"done\n"
            assert await channel.read() == b""  # its end of output is passed on...
            assert len(relay.streams) == 1  # ...and the stream stays for the replica to close
            await channel.close()
            await _until(lambda: not relay.streams)
        finally:
            await relay.close()

    run(test)


def test_tokens_open_once_and_expire_and_streams_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "TOKEN_SECONDS", 0.5)
    monkeypatch.setattr(relay_module, "MAX_STREAMS", 2)

    async def test() -> None:
        relay = Relay(IP)
        try:
            cat = await ProgramEnd.start("cat")
            ticket = await relay.offer(cat)
            channel = await RemoteChannel.open(ticket)
            again = await RemoteChannel.open(ticket)
            assert await again.read() == b""  # a token opens its stream once
            await again.close()
            await channel.write(b"still mine")
            assert await channel.read() == b"still mine"

            wrong = await RemoteChannel.open(ticket.__class__(IP, ticket.port, "0" * 32, "x"))
            assert await wrong.read() == b""
            await wrong.close()

            unclaimed = await ProgramEnd.start("cat")
            late = await relay.offer(unclaimed)
            refused = await ProgramEnd.start("cat")
            with pytest.raises(TooManyRequests):  # two open: the third is refused and its end closed
                await relay.offer(refused)
            assert refused.proc.returncode is not None
            await _until(lambda: unclaimed.proc.returncode is not None)  # nobody came for it: closed
            too_late = await RemoteChannel.open(late)
            assert await too_late.read() == b""
            await too_late.close()
            assert list(relay.streams) == [ticket.stream_id]
            await channel.close()
        finally:
            await relay.close()

    run(test)
