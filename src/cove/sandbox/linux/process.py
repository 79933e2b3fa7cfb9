"""Running one command through a container's init: pipes, streaming, caps, timeout, tree kill.

Output never passes through the control socket: Cove makes the pipes, hands their write ends to
the init (SCM_RIGHTS) and reads the other ends here, so output streams as it is produced and a
flood is cut to its head and tail without ever being held whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cove.errors import SandboxError
from cove.sandbox.base import CommandOutput, ExitOutcome, OutputCallback, TimeoutOutcome
from cove.sandbox.linux.init_client import InitClient, Job, SpawnError
from cove.sandbox.output import CappedText, split_budget

Stream = Literal["stdout", "stderr"]
_READ_SIZE = 65536
_KILL_GRACE = 5.0
"""How long a killed command may take to be reported dead before the container is stopped."""
_DRAIN_GRACE = 0.05
"""After the command exits, how long output from its background children is still collected."""
_STREAM_PIPE_BYTES = 1 << 20
"""Pipe size, and read size, for a streamed command's output (the usual 64 KiB costs 16x the wake-ups)."""
_F_SETPIPE_SZ = 1031
_FLOOD_PAUSE = 0.002
"""Past the kept head, each read of a pipe waits this long: a flood of output (``yes``) is slowed
by the pipe's backpressure instead of taking Cove's CPU from every other container (~30 MB/s)."""


class InitUnresponsive(SandboxError):
    """The container's init stopped answering; the container must be stopped."""


class _PipeReader:
    """Reads one pipe into a capped buffer, forwarding all of it to the streaming callback if there is one.

    Without a callback nobody wants the middle of a flood, so past twice the kept length each read
    waits ``_FLOOD_PAUSE``. With one, every byte goes to it, as fast as it takes them: a callback that
    returns a future holds reading until the future is done (the command then blocks on its full pipe),
    which is how a slow streaming client slows a fast command instead of losing its output.
    """

    def __init__(self, fd: int, name: Stream, limit: int, on_output: OutputCallback | None) -> None:
        self.fd = fd
        self.name = name
        self.text = CappedText(limit)
        self.eof = asyncio.Event()
        self._on_output = on_output
        self._loop = asyncio.get_running_loop()
        self._paused: asyncio.TimerHandle | None = None
        self._detached = False
        self._read_size = _READ_SIZE
        if on_output is not None:  # fewer, larger reads for a stream that may carry gigabytes
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, _STREAM_PIPE_BYTES)
                self._read_size = _STREAM_PIPE_BYTES
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    def _resume(self) -> None:
        self._paused = None
        if not self._detached and not self.eof.is_set():
            self._loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, self._read_size)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.text.feed(b"", final=True)
            self._loop.remove_reader(self.fd)
            self.eof.set()
            return
        text = self.text.feed(data)
        if self._on_output is None:
            if self.text.total > 2 * self.text.limit:
                self._loop.remove_reader(self.fd)
                self._paused = self._loop.call_later(_FLOOD_PAUSE, self._resume)
            return
        held = self._on_output(self.name, text) if text else None
        if held is not None and not held.done():
            self._loop.remove_reader(self.fd)
            held.add_done_callback(lambda _held: self._resume())

    def detach(self) -> int:
        """Stops reading; returns the fd for the caller to close or hand to a sink."""
        self._detached = True
        if self._paused is not None:
            self._paused.cancel()
        if not self.eof.is_set():
            self._loop.remove_reader(self.fd)
        return self.fd


@dataclass
class ProcessRequest:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    timeout_s: float
    max_output_length: int


def exit_code(status: int) -> int:
    """Shell convention: a death by signal N reads as 128 + N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


async def run_process(
    init: InitClient,
    request: ProcessRequest,
    keep: Callable[[int], None],
    on_output: OutputCallback | None = None,
    oom_note: Callable[[], str | None] | None = None,
    spawn_failed: Callable[[SpawnError], CommandOutput | None] | None = None,
) -> CommandOutput:
    """Runs ``request`` in the container behind ``init`` and returns its bounded output.

    A pipe still held by a background process when the command is done goes to ``keep``
    (``OutputSinks.adopt``), which owns it from then on. When the init cannot start the command,
    ``spawn_failed`` may say why better than the errno does (a missing working directory: looked for
    only then, so that a command that starts pays nothing for it).
    """
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        job = await init.spawn(request.argv, request.env, request.cwd, devnull, out_w, err_w)
    except SpawnError as exc:
        for fd in (out_r, err_r):
            os.close(fd)
        explained = spawn_failed(exc) if spawn_failed is not None else None
        if explained is not None:
            return explained
        message = f"cove: cannot run {request.argv[0]}: {os.strerror(exc.errno)}\n"
        return CommandOutput(stdout="", stderr=message, outcome=ExitOutcome(exit_code=127))
    finally:
        for fd in (devnull, out_w, err_w):
            os.close(fd)

    limit = request.max_output_length
    readers = [_PipeReader(out_r, "stdout", limit, on_output), _PipeReader(err_r, "stderr", limit, on_output)]
    timed_out = False
    try:
        status = await asyncio.wait_for(asyncio.shield(job.wait()), request.timeout_s)
    except TimeoutError:
        timed_out = True
        await job.signal(signal.SIGKILL)
        try:
            status = await asyncio.wait_for(job.wait(), _KILL_GRACE)
        except TimeoutError:
            # The init did not report the kill: it is wedged or subverted. Only a stop is sure now.
            raise InitUnresponsive("The container did not end a timed-out command.") from None
    except asyncio.CancelledError:
        # Whoever waited for it is gone (a response cancelled or past its time limit): the command
        # is killed rather than left running unseen.
        with contextlib.suppress(Exception):
            await job.signal(signal.SIGKILL)
        raise
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_GRACE):
                await asyncio.gather(*(reader.eof.wait() for reader in readers))
        for reader in readers:
            fd = reader.detach()
            if reader.eof.is_set():
                os.close(fd)
            else:
                keep(fd)

    stdout, stderr = readers[0].text, readers[1].text
    out_budget, err_budget = split_budget((stdout.total, stderr.total), limit)
    err_text = stderr.render(err_budget)
    if oom_note is not None:
        note = oom_note()
        if note:
            err_text += note
    outcome: ExitOutcome | TimeoutOutcome = (
        TimeoutOutcome() if timed_out else ExitOutcome(exit_code=exit_code(status)))
    return CommandOutput(stdout=stdout.render(out_budget), stderr=err_text, outcome=outcome)


async def spawn_connected(init: InitClient, argv: list[str], env: dict[str, str],
                          cwd: str) -> tuple[Job, socket.socket]:
    """Starts a long-lived process whose stdin and stdout are one end of a Unix stream socketpair;
    returns its job and the other end (stderr goes nowhere: nobody would read it).

    For programs that talk to the host for as long as they live (the display agent, a VNC server
    in ``-inetd`` mode), where ``run_process``'s run-to-completion with bounded output does not fit.
    A socket rather than two pipes because inetd-style programs read and write the same fd.
    """
    host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        job = await init.spawn(argv, env, cwd, child_end.fileno(), child_end.fileno(), devnull)
    except BaseException:
        host_end.close()
        raise
    finally:
        child_end.close()
        os.close(devnull)
    return job, host_end
