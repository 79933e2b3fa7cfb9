"""Host side of cove-init's control protocol (see ``cove-init.c`` for the wire format).

One ``InitClient`` per container talks to its init over a SOCK_SEQPACKET socket, entirely on the
event loop: no threads, no blocking calls. Output never crosses this socket; the caller passes the
fds a command gets as stdin, stdout and stderr, and reads the pipes itself. A terminal is the one fd
that comes back: init allocates it in the container and attaches its master end to STARTED.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable
from signal import SIGKILL

from cove.errors import SandboxError

logger = logging.getLogger(__name__)

OP_SPAWN = 1
OP_SIGNAL = 2
OP_SPAWN_PTY = 3
OP_STARTED = 1
OP_SPAWN_FAILED = 2
OP_EXITED = 3

MAX_MESSAGE = 256 * 1024
"""cove-init's receive buffer: a longer SPAWN would arrive truncated, so it is refused here."""

_HEADER = struct.Struct("<B3xIII")
_PTY_HEADER = struct.Struct("<B3xIIIHH")
_SIGNAL = struct.Struct("<B3xII")
_REPLY = struct.Struct("<B3xIi")
# Replies handled per wakeup: a flooding init must not starve the rest of the event loop.
_READ_BATCH = 256


class SpawnError(SandboxError):
    """Init could not start the command; ``errno`` says why (ENOENT: no such binary or cwd)."""

    def __init__(self, err: int, message: str | None = None) -> None:
        super().__init__(message or f"Starting the command failed: {os.strerror(err)}.")
        self.errno = err


class Job:
    """A command running under cove-init, identified by its job id (pid is as init sees it)."""

    def __init__(self, init: InitClient, job_id: int, pid: int, terminal: int = -1) -> None:
        self.id = job_id
        self.pid = pid
        self.terminal = terminal
        """A terminal's master fd (``spawn_pty``; the caller owns it), else -1."""
        self._init = init
        # None: the container went away before the job's exit was reported.
        self._exit: asyncio.Future[int | None] = init._loop.create_future()

    async def wait(self) -> int:
        """Returns the raw wait status (decode with ``os.waitstatus_to_exitcode``)."""
        status = await asyncio.shield(self._exit)
        if status is None:
            raise SandboxError("container stopped")
        return status

    @property
    def done(self) -> bool:
        """Whether it has exited (or the container went away)."""
        return self._exit.done()

    async def signal(self, signo: int) -> None:
        """Signals the job's process group and session; a no-op once it has exited."""
        await self._init.signal(self.id, signo)

    def __repr__(self) -> str:
        return f"<Job id={self.id} pid={self.pid}>"


class InitClient:
    """Client of one container's cove-init over its control socket.

    Must be created inside the running event loop that will use it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._fd = sock.fileno()
        sock.setblocking(False)
        # The default send buffer (~208 KiB) is below MAX_MESSAGE; the kernel doubles this value.
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE + 64 * 1024)
        except OSError as exc:
            logger.debug("cannot grow the control socket's send buffer: %s", exc)
        self._ids = itertools.count(1)
        # A spawn resolves to its Job, an errno (SPAWN_FAILED) or None (container stopped). Results
        # rather than exceptions, so a spawn abandoned mid-way leaves no unretrieved exception behind.
        self._pending: dict[int, asyncio.Future[Job | int | None]] = {}
        self._jobs: dict[int, Job] = {}
        self._pty_spawns: set[int] = set()
        """Pending spawns that must come back with a terminal's fd (and only these may)."""
        self._write_waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self._gone: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(self._fd, self._on_readable)

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_closed(self) -> None:
        """Returns once init is gone (or ``close`` was called)."""
        await asyncio.shield(self._gone)

    def close(self) -> None:
        """Closes the socket; init sees EOF and kills every process of the container."""
        self._shutdown()

    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str, stdin: int, stdout: int, stderr: int) -> Job:
        """Starts ``argv`` (argv[0] an absolute path, no PATH search) with exactly ``env``.

        The three fds are duplicated into init; the caller still owns and must close its copies.
        """
        return await self._spawn(_encode_spawn, argv, env, cwd, [stdin, stdout, stderr])

    async def spawn_pty(self, argv: list[str], env: dict[str, str], cwd: str, cols: int, rows: int) -> Job:
        """Starts ``argv`` on a new terminal of ``cols`` x ``rows`` that init allocates in the container;
        the job's ``terminal`` is the master's fd, which the caller owns and must close."""
        def encode(job_id: int, argv: list[str], env: dict[str, str], cwd: str) -> bytes:
            return _encode_spawn(job_id, argv, env, cwd, (rows, cols))

        return await self._spawn(encode, argv, env, cwd, [])

    async def _spawn(self, encode: Callable[[int, list[str], dict[str, str], str], bytes], argv: list[str],
                     env: dict[str, str], cwd: str, fds: list[int]) -> Job:
        if self._closed:
            raise SandboxError("container stopped")
        job_id = self._next_id()
        message = encode(job_id, argv, env, cwd)
        future: asyncio.Future[Job | int | None] = self._loop.create_future()
        self._pending[job_id] = future
        if not fds:
            self._pty_spawns.add(job_id)
        try:
            await self._send(message, fds)
            result = await future
        except asyncio.CancelledError:
            # Nobody will own the job: kill it if it started; if STARTED is still to come, _handle will.
            started = future.result() if future.done() and not future.cancelled() else None
            if isinstance(started, Job):
                self._signal_nowait(job_id, SIGKILL)
                if started.terminal >= 0:
                    os.close(started.terminal)
            raise
        finally:
            self._pending.pop(job_id, None)
            self._pty_spawns.discard(job_id)
        if isinstance(result, Job):
            return result
        if result is None:
            raise SandboxError("container stopped")
        raise SpawnError(result, f"Starting {argv[0]!r} in {cwd!r} failed: {os.strerror(result)}.")

    async def signal(self, job_id: int, signo: int) -> None:
        """Sends ``signo`` to a job's process group and session; unknown or finished jobs are ignored.

        Once the container is stopped this does nothing: its processes are gone already.
        """
        if self._closed:
            return
        try:
            await self._send(_SIGNAL.pack(OP_SIGNAL, job_id, signo), [])
        except SandboxError:
            if not self._closed:
                raise

    def _next_id(self) -> int:
        while True:
            job_id = next(self._ids) & 0xFFFFFFFF
            if job_id not in self._pending and job_id not in self._jobs:
                return job_id

    async def _send(self, message: bytes, fds: list[int]) -> None:
        """Sends one seqpacket, waiting for room in the socket buffer instead of blocking."""
        while True:
            if self._closed:
                raise SandboxError("container stopped")
            try:
                if fds:
                    socket.send_fds(self._sock, [message], fds, socket.MSG_NOSIGNAL)
                else:
                    self._sock.send(message, socket.MSG_NOSIGNAL)
                return
            except BlockingIOError:
                await self._writable()
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise SpawnError(errno.E2BIG, "The command line and environment are too long.") from None
                if exc.errno == errno.EBADF:
                    raise SpawnError(errno.EBADF, "stdin, stdout and stderr must be open fds.") from None
                logger.debug("control socket send failed: %s", exc)
                self._shutdown()
                raise SandboxError("container stopped") from None

    async def _writable(self) -> None:
        # One writer callback for all waiters: add_writer replaces any previous callback on the fd.
        waiter: asyncio.Future[None] = self._loop.create_future()
        if not self._write_waiters:
            self._loop.add_writer(self._fd, self._on_writable)
        self._write_waiters.append(waiter)
        await waiter

    def _on_writable(self) -> None:
        self._loop.remove_writer(self._fd)
        self._wake_writers()

    def _wake_writers(self) -> None:
        waiters, self._write_waiters = self._write_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _on_readable(self) -> None:
        for _ in range(_READ_BATCH):
            try:
                # Room for one fd (a terminal's master): the kernel discards any further ones.
                data, fds, _flags, _addr = socket.recv_fds(self._sock, 64, 1, socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.debug("control socket receive failed: %s", exc)
                self._shutdown()
                return
            if not data:  # init never sends empty messages: this is EOF, init is gone
                for fd in fds:
                    os.close(fd)
                self._shutdown()
                return
            self._handle(data, fds[0] if fds else -1)

    def _handle(self, data: bytes, fd: int = -1) -> None:
        """Handles one reply; ``fd`` (attached to it, or -1) is taken only by a terminal's STARTED and
        closed otherwise: what init sends is checked, as the container may have subverted it."""
        op, job_id, value = _REPLY.unpack_from(data) if len(data) >= _REPLY.size else (0, 0, 0)
        terminal = op == OP_STARTED and job_id in self._pty_spawns and fd >= 0 and _is_terminal(fd)
        if fd >= 0 and not terminal:
            os.close(fd)
            fd = -1
        if len(data) < _REPLY.size:
            logger.debug("ignoring a short message from init: %r", data)
            return
        if op == OP_STARTED:
            future = self._pending.pop(job_id, None)
            if future is None or future.done() or (job_id in self._pty_spawns and fd < 0):
                logger.debug("killing job %d: started but nobody waits for it (or without its terminal)", job_id)
                self._signal_nowait(job_id, SIGKILL)
                if fd >= 0:
                    os.close(fd)
                if future is not None and not future.done():
                    future.set_result(errno.EPROTO)
                return
            job = Job(self, job_id, value, fd)
            self._jobs[job_id] = job
            future.set_result(job)
        elif op == OP_SPAWN_FAILED:
            future = self._pending.pop(job_id, None)
            if future is None or future.done():
                logger.debug("ignoring SPAWN_FAILED for unknown job %d", job_id)
                return
            future.set_result(value)
        elif op == OP_EXITED:
            exited = self._jobs.pop(job_id, None)
            if exited is None:
                logger.debug("ignoring EXITED for unknown job %d", job_id)
                return
            if not exited._exit.done():
                exited._exit.set_result(value)
        else:
            logger.debug("ignoring a message with unknown op %d from init", op)

    def _signal_nowait(self, job_id: int, signo: int) -> None:
        try:
            self._sock.send(_SIGNAL.pack(OP_SIGNAL, job_id, signo), socket.MSG_NOSIGNAL)
        except OSError as exc:
            logger.debug("cannot signal job %d: %s", job_id, exc)

    def _shutdown(self) -> None:
        """Marks the container stopped and releases everyone waiting on it."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._sock.close()
        self._wake_writers()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_result(None)
        jobs, self._jobs = self._jobs, {}
        for job in jobs.values():
            if not job._exit.done():
                job._exit.set_result(None)
        if not self._gone.done():
            self._gone.set_result(None)


_PTMX = (5, 2)
"""The device number of every devpts instance's ``ptmx``, and so of every terminal master."""


def _is_terminal(fd: int) -> bool:
    """Whether ``fd`` is a terminal's master, not a file, pipe, socket or other device (``/dev/zero``)
    that would make the reader wait on or read something else."""
    try:
        info = os.fstat(fd)
    except OSError:
        return False
    return stat.S_ISCHR(info.st_mode) and (os.major(info.st_rdev), os.minor(info.st_rdev)) == _PTMX


def _encode_spawn(job_id: int, argv: list[str], env: dict[str, str], cwd: str,
                  size: tuple[int, int] | None = None) -> bytes:
    """A SPAWN message, or with ``size`` (rows, cols) a SPAWN_PTY."""
    if not argv:
        raise SpawnError(errno.EINVAL, "The command is empty.")
    strings = [os.fsencode(cwd), *map(os.fsencode, argv)]
    for key, value in env.items():
        if not key or "=" in key:
            raise SpawnError(errno.EINVAL, f"Invalid environment variable name {key!r}.")
        strings.append(os.fsencode(f"{key}={value}"))
    if any(b"\0" in s for s in strings):
        raise SpawnError(errno.EINVAL, "The command, its cwd and environment cannot contain NUL bytes.")
    header = (_HEADER.pack(OP_SPAWN, job_id, len(argv), len(env)) if size is None
              else _PTY_HEADER.pack(OP_SPAWN_PTY, job_id, len(argv), len(env), *size))
    message = header + b"".join(s + b"\0" for s in strings)
    if len(message) > MAX_MESSAGE:
        raise SpawnError(errno.E2BIG, "The command line and environment are too long.")
    return message
