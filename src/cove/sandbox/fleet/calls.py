"""Exec through a fleet node's relay: one connection per node, many commands in flight, off Ray's task path.

Exec is the hot call (every tool call of every agent), and a Ray actor call is a task: its spec, the
owner's bookkeeping, the result through the object store. Measured with ``bench/fleet.py``, that made a
command through the fleet 1.74-2.13 ms slower than on one machine. So a replica sends commands over a
*calls session* on the node's relay instead: the first exec to a node opens it (one host call returns its
ticket, as for a terminal), and from then on each command is one frame each way on the same connection,
answered when it finishes, in any order. Streaming exec, files and the rest stay Ray calls.

A frame is a 4-byte big-endian length and JSON: a request ``{"id", "exec": ExecRequest}``; an answer
``{"id", "output": CommandOutput}`` or ``{"id", "error": {"type", "message", "param", "code"}}``, where
``type`` names a ``CoveError`` class. JSON through pydantic, not pickle: the bytes come off a socket, and
only Cove's own types and errors cross it, so nothing else can be made of them.

Failure is Ray's, made Cove's the same way (``FleetEngine.call``): a connection that breaks fails its
commands in flight with 503 ``sandbox_unavailable`` ("may or may not have run") and the next command opens a
new session; a command whose answer does not come within its deadline fails the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from cove.errors import CoveError, SandboxError, SandboxUnavailable
from cove.sandbox.base import Command, CommandOutput, Limits
from cove.sandbox.fleet.relay import Ticket
from cove.sandbox.fleet.streams import connect

log = logging.getLogger(__name__)

MAX_FRAME = 128 * 2**20
"""Bytes in one frame at most: a command's capped output (10,000,000 characters) as escaped JSON fits."""
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class ExecRequest:
    """One command, as ``SandboxHost.exec`` takes it."""

    incarnation: str
    container_id: str
    limits: Limits
    command: Command


_REQUEST = TypeAdapter(ExecRequest)
_ERRORS: dict[str, type[CoveError]] = {}


def _error_class(name: str) -> type[CoveError]:
    """The ``CoveError`` class of that name (a ``SandboxError`` for a name Cove does not know)."""
    if not _ERRORS:
        pending: list[type[CoveError]] = [CoveError]
        while pending:
            cls = pending.pop()
            _ERRORS[cls.__name__] = cls
            pending.extend(cls.__subclasses__())
    return _ERRORS.get(name, SandboxError)


def error_of(body: dict[str, Any]) -> CoveError:
    """The error a host raised, as the replica raises it (the class's own constructor is skipped: some
    take other arguments, and the message, param and code already say everything)."""
    cls = _error_class(str(body.get("type")))
    error = cls.__new__(cls)
    CoveError.__init__(error, str(body.get("message")), param=body.get("param"), code=body.get("code"))
    return error


def error_body(error: BaseException) -> dict[str, Any]:
    if not isinstance(error, CoveError):
        error = SandboxError(f"The container's node failed: {error}")
    return {"type": type(error).__name__, "message": error.message, "param": error.param, "code": error.code}


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next frame (``asyncio.IncompleteReadError`` at the end of the connection)."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > MAX_FRAME:
        raise ValueError(f"a calls frame of {length} bytes (at most {MAX_FRAME})")
    body: dict[str, Any] = json.loads(await reader.readexactly(length))
    return body


def frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


async def serve(execute: Callable[[ExecRequest], Awaitable[CommandOutput]], reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    """The host's side of one session (run by the relay once the replica's token was accepted): each
    request runs as its own task, and its answer is written when it is done. Commands still running when
    the replica goes run to their end, as a Ray call whose caller left would."""
    running: set[asyncio.Task[None]] = set()

    async def answer(request_id: int, request: ExecRequest) -> None:
        try:
            output = await execute(request)
            payload = b'{"id":%d,"output":%s}' % (request_id, output.model_dump_json().encode())
        except Exception as error:
            if not isinstance(error, CoveError):
                log.exception("exec through the calls session failed")
            payload = json.dumps({"id": request_id, "error": error_body(error)}).encode()
        if not writer.is_closing():
            writer.write(frame(payload))
            with contextlib.suppress(ConnectionError):  # the replica is gone: nobody waits for this answer
                await writer.drain()

    while True:
        try:
            message = await read_frame(reader)
            request_id, request = int(message["id"]), _REQUEST.validate_python(message["exec"])
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        except Exception as error:  # not a replica speaking this protocol: nothing more it says is trusted
            log.warning("calls session closed: %s", error)
            return
        task = asyncio.create_task(answer(request_id, request))
        running.add(task)
        task.add_done_callback(running.discard)


class _Session:
    """One connection to a node's relay and the commands waiting for its answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ids = itertools.count()
        self.task = asyncio.create_task(self._read(reader))

    @property
    def open(self) -> bool:
        return not self.writer.is_closing()

    async def exec(self, request: ExecRequest) -> dict[str, Any]:
        request_id = next(self.ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = answer
        try:
            self.writer.write(frame(b'{"id":%d,"exec":%s}' % (request_id, _REQUEST.dump_json(request))))
            with contextlib.suppress(ConnectionError):  # the reader fails the answer when the connection broke
                await self.writer.drain()
            return await answer
        finally:
            self.waiting.pop(request_id, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Hands each answer to its command; when the connection ends, fails those still waiting."""
        why = "the connection to it closed"
        try:
            while True:
                body = await read_frame(reader)
                waiting = self.waiting.get(int(body["id"]))
                if waiting is not None and not waiting.done():
                    waiting.set_result(body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as error:
            why = f"its answer could not be read ({error})"
            log.warning("fleet calls session closed: %s", why)
        finally:
            self.writer.close()
            for waiting in self.waiting.values():
                if not waiting.done():
                    waiting.set_exception(SandboxUnavailable(
                        f"The container's node did not answer ({why}); the command may or may not have run."))

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class CallsClient:
    """The replica's session with one node: opened on first use, and again after it broke."""

    def __init__(self, open_ticket: Callable[[], Awaitable[Ticket]]) -> None:
        self._open_ticket = open_ticket
        self._session: _Session | None = None
        self._opening = asyncio.Lock()

    async def exec(self, request: ExecRequest) -> CommandOutput:
        """Runs the command on the node; the caller bounds the wait (``FleetEngine.call``)."""
        body = await (await self._open()).exec(request)
        if "error" in body:
            raise error_of(body["error"])
        return CommandOutput.model_validate(body["output"])

    async def _open(self) -> _Session:
        async with self._opening:
            if self._session is None or not self._session.open:
                ticket = await self._open_ticket()
                self._session = _Session(*await asyncio.open_connection(sock=await connect(ticket)))
            return self._session

    async def close(self) -> None:
        """Ends the session (its commands in flight fail as unanswered)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
