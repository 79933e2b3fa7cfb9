"""The container a response's hosted tools work in, as the tools see it: run commands, read, write and
list files, and act on its display.

Which container that is, when it is made and how its use is recorded is the service's business
(``service/workspace.py``); tests use ``cove.testing``'s in-memory one. An implementation says how
to reach its sandbox for one operation and what the container's id is; every operation here goes
through that.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from cove.sandbox.base import (
    Channel,
    Command,
    CommandOutput,
    Entry,
    FileContent,
    Files,
    OutputCallback,
    Sandbox,
    Screen,
)


class Workspace(abc.ABC):
    def __init__(self) -> None:
        self.citations: list[dict[str, Any]] = []
        """``container_file_citation`` annotations for files the tools wrote, for the final answer."""

    @abc.abstractmethod
    async def container_id(self) -> str:
        """The container's id, making the container if the response has none yet."""

    @abc.abstractmethod
    def _sandbox(self) -> AbstractAsyncContextManager[Sandbox]:
        """The container for one operation (kept from expiring while it lasts)."""

    async def cite(self, paths: list[str]) -> None:  # noqa: B027 - a workspace without file records cites nothing
        """Adds files the tools wrote to ``citations``, where the workspace can give them file ids."""

    @asynccontextmanager
    async def _files(self) -> AsyncIterator[Files]:
        async with self._sandbox() as sandbox:
            yield await sandbox.files()

    async def run(self, command: Command, on_output: OutputCallback | None = None) -> CommandOutput:
        async with self._sandbox() as sandbox:
            return await sandbox.exec(command, on_output)

    async def act(self, screen: Screen, actions: list[dict[str, Any]]) -> bytes:
        """Performs computer actions on the container's display (started with ``screen`` on first use)
        and returns the settled screenshot (PNG)."""
        async with self._sandbox() as sandbox:
            display = await sandbox.display(screen)
            return await display.act(actions)

    async def screenshot(self, screen: Screen) -> bytes:
        """The display as it is now (PNG)."""
        async with self._sandbox() as sandbox:
            display = await sandbox.display(screen)
            return await display.screenshot()

    async def stat(self, path: str) -> Entry | None:
        async with self._files() as files:
            return await files.stat(path)

    async def read(self, path: str, limit: int) -> FileContent:
        async with self._files() as files:
            return await files.read(path, limit)

    async def write(self, path: str, data: bytes, mode: int | None = None) -> None:
        async with self._files() as files:
            await files.write(path, [data], mode)

    async def delete(self, path: str) -> None:
        async with self._files() as files:
            await files.delete(path)

    async def list_dir(self, path: str, depth: int = 1) -> list[Entry]:
        async with self._files() as files:
            return await files.list_dir(path, depth)

    async def walk_files(self, path: str) -> list[Entry]:
        async with self._files() as files:
            return await files.walk_files(path)

    @asynccontextmanager
    async def channel(self, argv: list[str]) -> AsyncIterator[Channel]:
        """A long-lived program in the container over its stdin and stdout, for as long as the block runs
        (the container is held in use meanwhile); it ends with the block."""
        async with self._sandbox() as sandbox:
            channel = await sandbox.channel(argv)
            try:
                yield channel
            finally:
                await channel.close()


class NoContainer(Workspace):
    """The workspace of a response whose hosted tools need no container (web search alone): the
    service made none, so a tool that reached for one would be a bug, not a request to refuse."""

    async def container_id(self) -> str:
        raise RuntimeError("this response's tools need no container, and it has none")

    def _sandbox(self) -> AbstractAsyncContextManager[Sandbox]:
        raise RuntimeError("this response's tools need no container, and it has none")
