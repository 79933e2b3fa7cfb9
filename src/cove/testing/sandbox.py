"""A container in memory: files in a dict, commands answered by a function the test gives."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import PurePosixPath

from cove.errors import Conflict, InvalidRequest, NotFound
from cove.sandbox.base import (
    WALK_VISITS,
    Command,
    CommandOutput,
    Entry,
    ExitOutcome,
    FileContent,
    Files,
    OutputCallback,
    Sandbox,
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


class MemorySandbox(Sandbox):
    """A container whose commands go to ``run`` (default: exit 0, no output); each is kept in
    ``commands``. Output is streamed as the command's stdout, then its stderr."""

    def __init__(self, files: Files | None = None, run: Runner = _ok, container_id: str = "cntr_memory") -> None:
        self.id = container_id
        self.memory = files or MemoryFiles()
        self._run = run
        self.commands: list[Command] = []
        self._running = True

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
