"""Exec through a fleet node's relay: one connection per node, many commands in flight, off Ray's task path.

Exec is the hot call (every tool call of every agent), and a Ray actor call is a task: its spec, the
owner's bookkeeping, the result through the object store. Measured with ``bench/fleet.py``, that made a
command through the fleet 1.74-2.13 ms slower than on one machine (a streamed one, a Ray streaming
generator, 2.6-4.2 ms). So a replica sends commands over an *exec session* on the node's relay instead:
the first exec to a node opens it (one host call returns its ticket, as for a terminal), and from then on
each command is one frame each way on the same connection, answered when it finishes, in any order.
Files, streams' set-up and the rest stay Ray calls.

A frame is a 4-byte big-endian length and JSON. The replica sends ``{"id", "exec": ExecRequest}`` (with
``"stream": true`` for streamed output), ``{"id", "ack": n}`` once its client took ``n`` output chunks, and
``{"id", "cancel": true}`` when a command's caller went away (a cancelled response, a deadline). The host
sends ``{"id", "out": [stream, text]}`` per output chunk, at most ``STREAM_AHEAD`` unacknowledged (then it
stops reading the command's pipes: a slow client holds the command back, as on one machine), and last
``{"id", "output": CommandOutput}`` or ``{"id", "error": {"type", "message", "param", "code"}}``, where
``type`` names a ``CoveError`` class. JSON through pydantic, not pickle: the bytes come off a socket, and
only Cove's own types and errors cross it, so nothing else can be made of them.

Failure is Ray's, made Cove's the same way (``FleetEngine.call``): a connection that breaks fails its
commands in flight with 503 ``sandbox_unavailable`` ("may or may not have run") and the next command opens a
new session; a command whose answer does not come within its deadline fails the same way. Either way the
node kills the command, as one machine kills one whose caller went away (``run_process``).
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
from typing import Any, Literal

from pydantic import TypeAdapter

from cove.errors import CoveError, SandboxError, SandboxUnavailable
from cove.sandbox.base import Command, CommandOutput, Limits, OutputCallback
from cove.sandbox.fleet.relay import Ticket
from cove.sandbox.fleet.streams import connect

log = logging.getLogger(__name__)

MAX_FRAME = 128 * 2**20
"""Bytes in one frame at most: a command's capped output (10,000,000 characters) as escaped JSON fits."""
_LENGTH = struct.Struct(">I")
STREAM_AHEAD = 8
"""A streamed command's output chunks sent and not yet taken by the replica's client, at most: past it the
host stops reading the command's pipes, so a command that writes faster than its client reads blocks."""


@dataclass(frozen=True)
class ExecRequest:
    """One command, as ``SandboxHost.exec`` takes it."""

    incarnation: str
    container_id: str
    limits: Limits
    command: Command


Execute = Callable[[ExecRequest, OutputCallback | None], Awaitable[CommandOutput]]
"""What runs a command on the host (``SandboxHost.exec``), its output streamed to the callback if any."""
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


def error_fields(error: BaseException) -> dict[str, Any]:
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


class _Window:
    """How far a streamed command's output runs ahead of the replica: past ``STREAM_AHEAD`` chunks sent
    and not acknowledged, the pipes' readers are handed futures (``OutputCallback``) and stop reading."""

    def __init__(self) -> None:
        self.unacked = 0
        self.held: list[asyncio.Future[None]] = []
        self.open = False
        """No more holding back: the replica is gone, and the command is being cancelled."""

    def sent(self) -> asyncio.Future[None] | None:
        self.unacked += 1
        if self.open or self.unacked < STREAM_AHEAD:
            return None
        self.held.append(asyncio.get_running_loop().create_future())
        return self.held[-1]

    def acked(self, count: int) -> None:
        self.unacked -= count
        if self.unacked < STREAM_AHEAD:
            self.release()

    def release(self) -> None:
        held, self.held = self.held, []
        for waiter in held:
            if not waiter.done():
                waiter.set_result(None)


async def serve(execute: Execute, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The host's side of one session (run by the relay once the replica's token was accepted): each
    request runs as its own task, and its answer is written when it is done; a streamed one's output is
    written as it comes, ``STREAM_AHEAD`` chunks ahead of the replica's acknowledgements at most. A
    command is cancelled (the engine kills it) when the replica says its caller is gone, or when the
    session ends: as on one machine, a command whose waiter went away is not left running unseen."""
    running: dict[int, tuple[asyncio.Task[None], _Window | None]] = {}

    def send(payload: bytes) -> None:
        if not writer.is_closing():
            writer.write(frame(payload))

    async def answer(request_id: int, request: ExecRequest, window: _Window | None) -> None:
        def output(stream: Literal["stdout", "stderr"], text: str) -> asyncio.Future[None] | None:
            assert window is not None
            send(json.dumps({"id": request_id, "out": [stream, text]}).encode())
            return window.sent()

        try:
            result = await execute(request, output if window is not None else None)
            payload = b'{"id":%d,"output":%s}' % (request_id, result.model_dump_json().encode())
        except Exception as error:
            if not isinstance(error, CoveError):
                log.exception("exec through the calls session failed")
            payload = json.dumps({"id": request_id, "error": error_fields(error)}).encode()
        finally:
            running.pop(request_id, None)
        send(payload)
        with contextlib.suppress(ConnectionError):  # the replica is gone: nobody waits for this answer
            await writer.drain()

    try:
        while True:
            try:
                message = await read_frame(reader)
                request_id = int(message["id"])
                if "ack" in message or "cancel" in message:
                    task, window = running.get(request_id, (None, None))
                    if window is not None and "ack" in message:
                        window.acked(int(message["ack"]))
                    elif task is not None and "cancel" in message:
                        task.cancel()
                    continue
                request = _REQUEST.validate_python(message["exec"])
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except Exception as error:  # not a replica speaking this protocol: nothing more it says is trusted
                log.warning("calls session closed: %s", error)
                return
            window = _Window() if message.get("stream") else None
            running[request_id] = (asyncio.create_task(answer(request_id, request, window)), window)
    finally:  # the replica is gone: nobody will read these commands' output or answers
        for task, window in list(running.values()):
            if window is not None:
                window.open = True
                window.release()
            task.cancel()


class _Session:
    """One connection to a node's relay and the commands waiting for its answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.inboxes: dict[int, asyncio.Queue[dict[str, Any] | SandboxUnavailable]] = {}
        self.ids = itertools.count()
        self.task = asyncio.create_task(self._read(reader))

    @property
    def open(self) -> bool:
        return not self.writer.is_closing()

    def _send(self, payload: bytes) -> None:
        if not self.writer.is_closing():  # else the reader fails what waits
            self.writer.write(frame(payload))

    async def exec(self, request: ExecRequest, on_output: OutputCallback | None) -> dict[str, Any]:
        """The command's answer (its output or its error, as sent); its streamed output goes to
        ``on_output`` first, each chunk acknowledged once ``on_output`` has taken it."""
        request_id = next(self.ids)
        inbox: asyncio.Queue[dict[str, Any] | SandboxUnavailable] = asyncio.Queue()
        self.inboxes[request_id] = inbox
        answered = False
        try:
            stream = b',"stream":true' if on_output is not None else b""
            self._send(b'{"id":%d,"exec":%s%s}' % (request_id, _REQUEST.dump_json(request), stream))
            with contextlib.suppress(ConnectionError):  # the reader fails the answer when the connection broke
                await self.writer.drain()
            while True:
                body = await inbox.get()
                if isinstance(body, SandboxUnavailable):
                    raise body
                if "out" not in body:
                    answered = True
                    return body
                name, text = body["out"]
                if on_output is None or name not in ("stdout", "stderr") or not isinstance(text, str):
                    raise SandboxError("The container's node sent output nobody asked for.")
                pending = on_output(name, text)
                if pending is not None:
                    await pending
                self._send(b'{"id":%d,"ack":1}' % request_id)
        finally:
            del self.inboxes[request_id]
            if not answered:  # whoever waited is gone (cancelled, or past its deadline): so is the command
                self._send(b'{"id":%d,"cancel":true}' % request_id)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Hands each frame to its command; when the connection ends, fails those still waiting."""
        why = "the connection to it closed"
        try:
            while True:
                body = await read_frame(reader)
                inbox = self.inboxes.get(int(body["id"]))
                if inbox is not None:
                    inbox.put_nowait(body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as error:
            why = f"its answer could not be read ({error})"
            log.warning("fleet calls session closed: %s", why)
        finally:
            self.writer.close()
            for inbox in self.inboxes.values():
                inbox.put_nowait(SandboxUnavailable(
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

    async def exec(self, request: ExecRequest, on_output: OutputCallback | None = None) -> CommandOutput:
        """Runs the command on the node; the caller bounds the wait (``FleetEngine.call``)."""
        body = await (await self._open()).exec(request, on_output)
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
