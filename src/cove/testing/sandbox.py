"""A container in memory: files in a dict, commands answered by a function the test gives, and
(when asked for) a display that keeps the actions it is given."""

from __future__ import annotations

import inspect
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import PurePosixPath
from typing import Any

from cove.errors import Conflict, InvalidRequest, NotFound
from cove.sandbox.base import (
    WALK_VISITS,
    Channel,
    Command,
    CommandOutput,
    Display,
    Entry,
    ExitOutcome,
    FileContent,
    Files,
    OutputCallback,
    Sandbox,
    Screen,
    normalize_path,
)
from cove.tools.workspace import Workspace

Runner = Callable[[Command], CommandOutput | Awaitable[CommandOutput]]


def _ok(_command: Command) -> CommandOutput:
    return CommandOutput(stdout="", stderr="", outcome=ExitOutcome(exit_code=0))


class MemoryFiles(Files):
    """Regular files and directories by path (no symlinks); ``/`` always exists."""

    def __init__(self, files: dict[str, bytes | str] | None = None) -> None:
        self.files: dict[str, tuple[bytes, int, float]] = {}
        self.dirs: set[str] = {"/"}
        for path, data in (files or {}).items():
            self._put(path, data.encode() if isinstance(data, str) else data, 0o644)

    def text(self, path: str) -> str:
        """A file's content as text, for assertions."""
        return self.files[str(normalize_path(path))][0].decode()

    def _put(self, path: str, data: bytes, mode: int) -> None:
        target = normalize_path(path)
        if str(target) in self.dirs:
            raise Conflict(f"{path!r} is a directory.", param="path")
        for parent in target.parents:
            if str(parent) in self.files:
                raise NotFound(f"No such file in the container: {path!r}.", param="path", code="file_not_found")
            self.dirs.add(str(parent))
        self.files[str(target)] = (data, mode, time.time())

    def _file(self, path: str) -> tuple[bytes, int, float]:
        target = str(normalize_path(path))
        if target in self.dirs:
            raise InvalidRequest(f"{path!r} is not a regular file.", param="path")
        if target not in self.files:
            raise NotFound(f"No such file in the container: {target!r}.", param="path", code="file_not_found")
        return self.files[target]

    async def stat(self, path: str) -> Entry | None:
        target = str(normalize_path(path))
        if target in self.dirs:
            return Entry(target, 4096, True, 0.0)
        if target in self.files:
            data, _mode, mtime = self.files[target]
            return Entry(target, len(data), False, mtime)
        return None

    async def read(self, path: str, limit: int) -> FileContent:
        data, mode, _mtime = self._file(path)
        if len(data) > limit:
            raise InvalidRequest(f"the file is too large ({len(data)} bytes; the limit is {limit}).", param="path")
        return FileContent(data, mode)

    async def stream(self, path: str) -> tuple[int, AsyncIterator[bytes]]:
        data, _mode, _mtime = self._file(path)

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        return len(data), chunks()

    async def write(self, path: str, chunks: Iterable[bytes], mode: int | None = None) -> int:
        data = b"".join(chunks)
        self._put(path, data, 0o644 if mode is None else mode)
        return len(data)

    async def delete(self, path: str) -> None:
        target = str(normalize_path(path))
        if target in self.dirs:
            raise Conflict(f"{path!r} is a directory.", param="path")
        self.files.pop(target, None)

    def _under(self, top: PurePosixPath) -> list[PurePosixPath]:
        """Every entry below ``top``, breadth first (as a walk meets them), then by name."""
        below = (PurePosixPath(name) for name in self.dirs | set(self.files))
        return sorted((path for path in below if top in path.parents), key=lambda path: (len(path.parts), path.parts))

    async def list_dir(self, path: str, depth: int = 1, limit: int = 10_000,
                       visits: int = WALK_VISITS) -> list[Entry]:
        top = normalize_path(path)
        if str(top) not in self.dirs:
            raise NotFound(f"No such file in the container: {str(top)!r}.", param="path", code="file_not_found")
        shallow = [path for path in self._under(top) if len(path.relative_to(top).parts) <= depth][:visits]
        found = [await self.stat(str(path)) or Entry(str(path), 0, False, 0.0) for path in shallow]
        return sorted(found, key=lambda entry: PurePosixPath(entry.path).parts)[:limit]

    async def walk_files(self, path: str, limit: int = 10_000, visits: int = WALK_VISITS) -> list[Entry]:
        found = []
        for name in map(str, self._under(normalize_path(path))[:visits]):
            if name in self.files:
                data, _mode, mtime = self.files[name]
                found.append(Entry(name, len(data), False, mtime))
        return found[:limit]


def solid_png(width: int, height: int, shade: int) -> bytes:
    """A grey PNG of the given size (``shade`` 0-255), made with zlib alone."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\x00" + bytes([shade % 256]) * width) * height
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


class MemoryDisplay(Display):
    """A display that keeps each batch of actions in ``batches`` and answers each with a grey PNG at its
    size, one shade lighter per batch, so that screenshots differ. An action whose ``type`` is not
    OpenAI's is refused as the real display refuses it (``InvalidRequest`` naming ``actions[i]``)."""

    KNOWN = frozenset({"click", "double_click", "drag", "keypress", "move", "scroll", "type", "wait", "screenshot"})

    def __init__(self, screen: Screen) -> None:
        self.screen = screen
        self.batches: list[list[dict[str, Any]]] = []

    async def act(self, actions: list[dict[str, Any]]) -> bytes:
        for index, action in enumerate(actions):
            if action.get("type") not in self.KNOWN:
                raise InvalidRequest(f"Unknown action type {action.get('type')!r}.", param=f"actions[{index}].type")
        self.batches.append(list(actions))
        return await self.screenshot()

    async def screenshot(self) -> bytes:
        return solid_png(self.screen.width, self.screen.height, len(self.batches) * 16)

    async def vnc(self) -> Channel:
        raise InvalidRequest("A display in memory has no VNC.", code="no_display")


class MemorySandbox(Sandbox):
    """A container whose commands go to ``run`` (default: exit 0, no output); each is kept in
    ``commands``. Output is streamed as the command's stdout, then its stderr. With ``desktop`` it has
    a ``MemoryDisplay`` (``screen``), started on first use with the size asked for then."""

    def __init__(self, files: Files | None = None, run: Runner = _ok, container_id: str = "cntr_memory",
                 desktop: bool = False) -> None:
        self.id = container_id
        self.memory = files or MemoryFiles()
        self._run = run
        self.commands: list[Command] = []
        self._running = True
        self.desktop = desktop
        self.screen: MemoryDisplay | None = None

    async def exec(self, command: Command, on_output: OutputCallback | None = None) -> CommandOutput:
        self._running = True
        self.commands.append(command)
        result = self._run(command)
        output = await result if inspect.isawaitable(result) else result
        if on_output is not None:
            for stream in ("stdout", "stderr"):
                if getattr(output, stream):
                    on_output(stream, getattr(output, stream))
        return output

    async def files(self) -> Files:
        return self.memory

    async def display(self, screen: Screen | None = None) -> Display:
        if not self.desktop:
            return await super().display(screen)
        if self.screen is None:
            self.screen = MemoryDisplay(screen or Screen())
        return self.screen

    @property
    def has_display(self) -> bool:
        return self.desktop

    async def stop(self) -> None:
        self._running = False

    @property
    def running(self) -> bool:
        return self._running


class MemoryWorkspace(Workspace):
    """Hosted tools' view of one sandbox (by default a ``MemorySandbox``); cited paths are kept in ``cited``."""

    def __init__(self, sandbox: Sandbox | None = None) -> None:
        super().__init__()
        self.sandbox = sandbox or MemorySandbox()
        self.cited: list[str] = []

    async def container_id(self) -> str:
        return self.sandbox.id

    @asynccontextmanager
    async def _sandbox(self) -> AsyncIterator[Sandbox]:
        yield self.sandbox

    async def cite(self, paths: list[str]) -> None:
        self.cited.extend(paths)
