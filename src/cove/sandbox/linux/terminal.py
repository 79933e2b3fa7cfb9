"""A program on a pseudo-terminal in a container, as the host drives it through the master's fd.

The container's init allocates the terminal (``cove-init.c``, SPAWN_PTY) from the container's own
devpts and hands back only the master end; this reads and writes that fd on the event loop, sets its
size with ``TIOCSWINSZ`` (the kernel then sends the program SIGWINCH), and ends the program through
init, which kills its whole session: everything started on the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Callable

from cove.errors import SandboxError
from cove.sandbox.base import Terminal
from cove.sandbox.linux.init_client import Job
from cove.sandbox.linux.process import exit_code

_READ_SIZE = 65536
_STOPPED_EXIT = 137
"""The exit code of a program whose container stopped under it (as a killed command's)."""


class LinuxTerminal(Terminal):
    def __init__(self, job: Job) -> None:
        self._job = job
        self._fd = job.terminal
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._waiters: set[asyncio.Future[None]] = set()
        os.set_blocking(self._fd, False)

    async def read(self) -> bytes:
        while not self._closed:
            try:
                return os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                await self._ready(self._loop.add_reader, self._loop.remove_reader)
            except OSError as exc:
                if exc.errno == errno.EIO:  # no process holds the terminal any more
                    return b""
                raise
        return b""

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._closed:
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:
                await self._ready(self._loop.add_writer, self._loop.remove_writer)
            except OSError as exc:
                if exc.errno == errno.EIO:  # the program is gone: what it was typed is lost with it
                    return
                raise

    async def _ready(self, add: Callable[..., object], remove: Callable[[int], object]) -> None:
        """Waits until the fd is readable (``add_reader``) or writable (``add_writer``), or closed."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiters.add(future)
        add(self._fd, _wake, future)
        try:
            await future
        finally:
            self._waiters.discard(future)
            if not self._closed:
                remove(self._fd)

    def resize(self, cols: int, rows: int) -> None:
        if not self._closed:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    async def wait(self) -> int:
        try:
            return exit_code(await self._job.wait())
        except SandboxError:
            return _STOPPED_EXIT

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        os.close(self._fd)
        for waiter in list(self._waiters):
            _wake(waiter)
        if not self._job.done:
            with contextlib.suppress(SandboxError):
                await self._job.signal(signal.SIGKILL)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
