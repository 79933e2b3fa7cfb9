"""A Linux container's display: the host side of the display agent (``display_agent.py``).

The agent runs in the container as a long-lived process started through cove-init, talking over a
socketpair; it owns Xvfb, the window manager and Chromium, all in its session, so killing its job
ends them together. Everything it says is the container's and is bounded here: a reply header of at
most ``MAX_HEADER`` bytes, a PNG no larger than the screen could need, each within a time limit. An
agent that breaks a bound, dies or is killed is ended with its whole session and started again on
the next use; a container stop ends it with everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from signal import SIGKILL
from typing import Any

from cove.errors import DisplayError, InvalidRequest, SandboxError
from cove.sandbox.base import DISPLAY_ENVIRONMENTS, Channel, Display, Screen
from cove.sandbox.linux.actions import compile_actions
from cove.sandbox.linux.init_client import Job
from cove.sandbox.linux.process import exit_code
from cove.sandbox.linux.spec import COVE_DIR

AGENT_SOURCE = Path(__file__).with_name("display_agent.py")
MAX_HEADER = 65536
START_TIMEOUT_S = 30.0
"""Xvfb, openbox and Chromium painting: under 2 s warm, several on a cold page cache or a busy host."""
REPLY_TIMEOUT_S = 15.0
"""An action batch beyond its own waits (xdotool typing 10,000 characters takes ~20 s: typed text
gets its share on top), plus the settle and a PNG encode."""
_PNG = b"\x89PNG\r\n\x1a\n"
MIN_SIDE, MAX_SIDE = 64, 4096
"""Display sizes accepted: OpenAI's computer-use models work at 1024x768 to about 1920x1080."""

Connect = Callable[[list[str]], Awaitable[tuple[Job, socket.socket]]]
"""Starts a process in the container with a socket as stdin/stdout (``LinuxSandbox.connect``)."""


def install_agent(libexec: Path) -> str:
    """Puts the agent beside cove-init in the directory every container sees read-only at ``/.cove``
    (named by its hash, so a running container never sees its agent change); returns its path there."""
    source = AGENT_SOURCE.read_bytes()
    name = f"display-agent-{hashlib.sha256(source).hexdigest()[:16]}.py"
    dest = libexec / name
    if not dest.exists():
        tmp = libexec / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_bytes(source)
            tmp.chmod(0o644)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
    return f"{COVE_DIR}/{name}"


def check_screen(screen: Screen) -> Screen:
    for name, value in (("display_width", screen.width), ("display_height", screen.height)):
        if isinstance(value, bool) or not isinstance(value, int) or not MIN_SIDE <= value <= MAX_SIDE:
            raise InvalidRequest(f"{name} must be an integer from {MIN_SIDE} to {MAX_SIDE}.", param=name)
    if screen.environment not in DISPLAY_ENVIRONMENTS:
        raise InvalidRequest(f"environment must be one of {', '.join(DISPLAY_ENVIRONMENTS)}.", param="environment")
    return screen


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    if len(data) < 24 or not data.startswith(_PNG) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


class _Agent:
    """One running agent process and its connection."""

    def __init__(self, job: Job, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, screen: Screen) -> None:
        self.job = job
        self.reader = reader
        self.writer = writer
        self.screen = screen
        self.max_png = screen.width * screen.height * 4 + 65536
        """A PNG of the screen: raw RGB plus filter bytes and chunk overhead, with room to spare."""

    @property
    def alive(self) -> bool:
        return not self.job.done and not self.writer.is_closing()

    async def header(self) -> dict[str, Any]:
        try:
            line = await self.reader.readuntil(b"\n")
            header = json.loads(line)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError) as exc:
            raise _Broken(f"an unreadable reply ({type(exc).__name__})") from None
        if not isinstance(header, dict):
            raise _Broken("a reply that is not an object")
        return header

    async def request(self, request: dict[str, Any], seconds: float) -> bytes:
        try:
            async with asyncio.timeout(seconds):
                self.writer.write(json.dumps(request).encode() + b"\n")
                await self.writer.drain()
                header = await self.header()
                if "error" in header:
                    raise DisplayError(f"The display failed: {str(header['error'])[:500]}")
                size = header.get("size")
                if not isinstance(size, int) or not 0 < size <= self.max_png:
                    raise _Broken(f"a screenshot size out of bounds ({str(size)[:20]})")
                data = await self.reader.readexactly(size)
        except TimeoutError:
            raise _Broken(f"no answer within {seconds:.0f} s") from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise _Broken("it ended") from None
        try:
            width, height = png_size(data)
        except ValueError:
            raise _Broken("a screenshot that is not a PNG") from None
        if (width, height) != (self.screen.width, self.screen.height):
            raise _Broken(f"a screenshot of {width}x{height}, not the screen's size")
        return data

    async def kill(self) -> None:
        """Ends the agent's whole session (Xvfb, Chromium, ...) and the connection."""
        await self.job.signal(SIGKILL)
        self.writer.close()
        with contextlib.suppress(ConnectionError, SandboxError):
            await self.writer.wait_closed()


class _Broken(Exception):
    """The agent broke the protocol; the message says how."""


class LinuxDisplay(Display):
    """One container's display; ``LinuxSandbox.display`` keeps one per container."""

    def __init__(self, screen: Screen, agent_path: str, connect: Connect) -> None:
        self.screen = screen
        self._agent_path = agent_path
        self._connect = connect
        self._agent: _Agent | None = None
        self._lock = asyncio.Lock()

    async def start(self, screen: Screen | None = None) -> None:
        """Starts the agent unless it runs; one that is not running takes ``screen`` first (the first
        use after a stop, or after the agent died, may ask for another size)."""
        async with self._lock:
            if screen is not None and (self._agent is None or not self._agent.alive):
                self.screen = screen
            await self._running()

    async def act(self, actions: list[dict[str, Any]]) -> bytes:
        async with self._lock:
            steps, settle = compile_actions(actions, self.screen)  # checked before the display starts
            waits = sum(float(step.get("sleep", 0)) for step in steps)
            typed = sum(len(step["xdotool"][-1]) for step in steps if step.get("xdotool", [""])[0] == "type")
            seconds = REPLY_TIMEOUT_S + waits + typed * 0.004
            return await self._request({"op": "act", "steps": steps, "settle": settle}, seconds)

    async def screenshot(self) -> bytes:
        async with self._lock:
            return await self._request({"op": "screenshot"}, REPLY_TIMEOUT_S)

    async def vnc(self) -> Channel:
        async with self._lock:
            await self._running()
        job, sock = await self._connect(["/bin/sh", "-c", 'exec x11vnc -inetd -display "$DISPLAY" '
                                         "-nopw -shared -noxdamage -quiet -o /dev/null"])
        reader, writer = await asyncio.open_connection(sock=sock)
        return SocketChannel(job, reader, writer)

    def detach(self) -> None:
        """Lets go of the agent of a container that stopped (its processes are gone already)."""
        agent, self._agent = self._agent, None
        if agent is not None:
            agent.writer.close()

    async def _request(self, request: dict[str, Any], seconds: float) -> bytes:
        """One request to the agent (started if needed), under the lock."""
        agent = await self._running()
        try:
            return await agent.request(request, seconds)
        except _Broken as exc:
            await self._drop(agent)
            raise DisplayError(f"The display stopped answering ({exc}); it starts again on the next "
                               "action.") from None
        except BaseException:
            if not agent.alive:
                await self._drop(agent)
            raise

    async def _drop(self, agent: _Agent) -> None:
        if self._agent is agent:
            self._agent = None
        await agent.kill()

    async def _running(self) -> _Agent:
        """The agent, started (with the container, if it is stopped) unless it is alive. Under the lock."""
        if self._agent is not None and self._agent.alive:
            return self._agent
        if self._agent is not None:
            await self._drop(self._agent)
        screen = self.screen
        job, sock = await self._connect(["/bin/sh", "-c", 'exec python3 "$0" "$@"', self._agent_path,
                                         str(screen.width), str(screen.height), screen.environment])
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_HEADER)
        agent = _Agent(job, reader, writer, screen)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                header = await agent.header()
        except (TimeoutError, _Broken) as exc:
            why = f"no answer within {START_TIMEOUT_S:.0f} s" if isinstance(exc, TimeoutError) else str(exc)
            why += await _exit_note(job)
            await agent.kill()
            raise DisplayError(f"The display did not start: {why}.") from None
        except BaseException:
            await agent.kill()
            raise
        if "ready" not in header:
            await agent.kill()
            raise DisplayError(f"The display did not start: {str(header.get('error', header))[:500]}")
        self._agent = agent
        return agent


async def _exit_note(job: Job) -> str:
    """Why an agent that never said it was ready ended, if it did (127: the image has no python3)."""
    try:
        async with asyncio.timeout(1):
            status = await job.wait()
    except (TimeoutError, SandboxError):
        return ""
    code = exit_code(status)
    return "; the image has no python3" if code == 127 else f"; it exited with status {code}"


class SocketChannel(Channel):
    """A process's stdin/stdout socket, as a byte stream."""

    def __init__(self, job: Job, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._job = job
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(65536)
        except ConnectionError:
            return b""

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        await self._job.signal(SIGKILL)
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


def display_of(image_env: dict[str, str]) -> str | None:
    """The display an image declares (``DISPLAY`` in its env, as the desktop image sets it), if any."""
    value = image_env.get("DISPLAY", "")
    return value if value.startswith(":") and value[1:].replace(".", "").isdigit() else None

