"""``sbx.files``: read, write, list, remove and watch files anywhere in the sandbox.

Writes go through the upload route (``POST /v1/containers/{id}/files`` with a ``path``), so a file
written here is a container file of the API as well. Reads, listings and watches run small commands
through the streaming exec route, whose output is never cut: a read is the file in base64, a
listing ``find``'s output, a watch a poller in the image's python3 printing one JSON line per change.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import shlex
from collections.abc import Callable
from typing import IO, Any, Literal, overload

from cove.sdk.commands import Output, stream_command
from cove.sdk.connection import Connection
from cove.sdk.errors import NotFoundError, SandboxError
from cove.sdk.models import EntryInfo, FilesystemEvent, FilesystemEventType, FileType, WriteInfo

_TYPES = {"f": FileType.FILE, "d": FileType.DIR, "l": FileType.SYMLINK}
_WATCHER = r"""
import json, os, sys, time
root, recursive = sys.argv[1], sys.argv[2] == "1"
def scan():
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            seen[os.path.relpath(path, root)] = (st.st_mtime_ns, st.st_size, st.st_ino)
        if not recursive:
            break
    return seen
if not os.path.isdir(root):
    sys.exit("not a directory: " + root)
before = scan()
print(json.dumps({"pid": os.getpid()}), flush=True)
while True:
    time.sleep(0.1)
    now = scan()
    for name in sorted(now.keys() - before.keys()):
        print(json.dumps({"name": name, "type": "create"}), flush=True)
    for name in sorted(now.keys() & before.keys()):
        if now[name] != before[name]:
            print(json.dumps({"name": name, "type": "write"}), flush=True)
    for name in sorted(before.keys() - now.keys()):
        print(json.dumps({"name": name, "type": "remove"}), flush=True)
    before = now
"""
"""The watcher: a polling loop (every 0.1 s) rather than inotify, which images need not have."""

EventHandler = Callable[[FilesystemEvent], None]


class AsyncWatchHandle:
    """A running watch: ``get_new_events()`` answers what changed since the last call; ``stop()`` ends it."""

    def __init__(self, files: AsyncFiles, on_event: EventHandler | None) -> None:
        self._files, self._on_event = files, on_event
        self._events: list[FilesystemEvent] = []
        self._buffer = ""
        self._started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[tuple[str, str, int | None]] | None = None

    def _feed(self, text: str) -> None:
        """The watcher's stdout as it arrives, split into its JSON lines."""
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            message = json.loads(line)
            if "pid" in message:
                self._started.set_result(int(message["pid"]))
                continue
            event = FilesystemEvent(message["name"], FilesystemEventType(message["type"]))
            self._events.append(event)
            if self._on_event is not None:
                self._on_event(event)

    def get_new_events(self) -> list[FilesystemEvent]:
        events, self._events = self._events, []
        return events

    async def stop(self) -> None:
        if self._task is None or self._task.done():
            return
        pid = self._started.result() if self._started.done() else None
        if pid is not None:
            await self._files._run(f"kill -KILL {pid}")
        await asyncio.wait([self._task])


class AsyncFiles:
    def __init__(self, connection: Connection, sandbox_id: str) -> None:
        self._connection, self._sandbox_id = connection, sandbox_id

    async def _run(self, command: str, output: Output | None = None,
                   timeout: float | None = 300) -> tuple[str, str, int | None]:
        output = output or Output(None, None)
        code, _ = await stream_command(self._connection, self._sandbox_id, command, envs=None, cwd=None,
                                       timeout=timeout, output=output)
        return output.text("stdout"), output.text("stderr"), code

    async def _checked(self, command: str, path: str) -> str:
        stdout, stderr, code = await self._run(command)
        if code != 0:
            if "No such file" in stderr or "Not a directory" in stderr:
                raise NotFoundError(404, f"No such file or directory in the sandbox: {path!r}", param="path")
            raise SandboxError(f"Cannot access {path!r} in the sandbox: {stderr.strip() or f'exit code {code}'}")
        return stdout

    @overload
    async def read(self, path: str, format: Literal["text"] = ...) -> str: ...

    @overload
    async def read(self, path: str, format: Literal["bytes"]) -> bytes: ...

    async def read(self, path: str, format: Literal["text", "bytes"] = "text") -> str | bytes:
        """The file's content, as text (UTF-8) or bytes."""
        encoded = await self._checked(f"base64 -- {shlex.quote(path)}", path)
        try:
            data = base64.b64decode(encoded)
        except binascii.Error as exc:
            raise SandboxError(f"Could not read {path!r}: {exc}") from None
        return data if format == "bytes" else data.decode()

    async def write(self, path: str, data: str | bytes | IO[bytes]) -> WriteInfo:
        """Makes or replaces the file (and its parent directories) with ``data``."""
        content = data.encode() if isinstance(data, str) else data
        name = path.rsplit("/", 1)[-1] or "upload"
        made = await self._connection.request("POST", f"/containers/{self._sandbox_id}/files",
                                              files={"file": (name, content)}, data={"path": path})
        return WriteInfo(made["id"], made["path"], int(made["bytes"]))

    async def list(self, path: str, depth: int = 1) -> list[EntryInfo]:
        """Entries under a directory, ``depth`` levels down, sorted by path."""
        listing = await self._checked(f"find {shlex.quote(path)} -mindepth 1 -maxdepth {int(depth)} "
                                      "-printf '%y\\t%s\\t%T@\\t%p\\0'", path)
        entries = []
        for record in filter(None, listing.split("\0")):
            kind, size, mtime, entry_path = record.split("\t", 3)
            entries.append(EntryInfo(entry_path.rsplit("/", 1)[-1], entry_path, _TYPES.get(kind, FileType.OTHER),
                                     int(size), float(mtime)))
        return sorted(entries, key=lambda entry: entry.path)

    async def exists(self, path: str) -> bool:
        _, _, code = await self._run(f"test -e {shlex.quote(path)} || test -L {shlex.quote(path)}")
        return code == 0

    async def remove(self, path: str) -> None:
        """Removes a file or a directory with everything in it."""
        await self._checked(f"rm -rf -- {shlex.quote(path)}", path)

    async def make_dir(self, path: str) -> None:
        await self._checked(f"mkdir -p -- {shlex.quote(path)}", path)

    async def watch_dir(self, path: str, on_event: EventHandler | None = None, *, recursive: bool = False,
                        timeout: float | None = None) -> AsyncWatchHandle:
        """Watches a directory (E2B's ``watch_dir``): changes are seen from when this returns, every
        0.1 s, until ``stop()`` or ``timeout`` seconds (None: an hour)."""
        handle = AsyncWatchHandle(self, on_event)
        command = f"python3 -c {shlex.quote(_WATCHER)} {shlex.quote(path)} {int(recursive)}"
        events = Output(handle._feed, None, keep_handled=False)
        task = handle._task = asyncio.create_task(self._run(command, events, timeout))
        waiting: list[asyncio.Future[Any]] = [task, handle._started]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not handle._started.done():
            _, stderr, _ = task.result()
            raise NotFoundError(404, f"Cannot watch {path!r}: {stderr.strip()}", param="path")
        return handle

