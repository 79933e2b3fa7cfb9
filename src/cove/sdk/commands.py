"""``sbx.commands``: commands run through the streaming ``/exec`` route, their output handed to
callbacks as it is produced, in the foreground or in the background (a handle to wait on or kill)."""

from __future__ import annotations

import asyncio
import inspect
import secrets
import shlex
from collections.abc import Awaitable, Callable
from typing import Any, Literal, overload

from cove.sdk.connection import Connection
from cove.sdk.errors import APIError, CommandExitError
from cove.sdk.models import CommandResult

OutputHandler = Callable[[str], Awaitable[None] | None]
DEFAULT_TIMEOUT = 60.0
MAX_TIMEOUT = 3600.0
"""The exec route's bound for one command (``timeout_ms`` up to an hour)."""
PID_DIR = "/tmp/.cove-sdk"
"""Where a background command leaves its shell's pid, for ``kill``."""
_KILL_TREE = 'tree() { kill -STOP "$1" 2>/dev/null; for c in $(pgrep -P "$1"); do tree "$c"; done; kill -KILL "$1"; };'
"""A shell function that SIGKILLs a process and its descendants, each stopped first so none forks away."""


class Output:
    """The text of one command as the stream delivers it (deltas are never cut, unlike the final output).

    With ``keep_handled=False`` a stream that has a handler is only handed on, not kept: a watch or a
    kernel's messages may run long, and their handler has taken what it needs.
    """

    def __init__(self, on_stdout: OutputHandler | None, on_stderr: OutputHandler | None, *,
                 keep_handled: bool = True) -> None:
        self.handlers = {"stdout": on_stdout, "stderr": on_stderr}
        self.pieces: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.keep_handled = keep_handled

    async def add(self, stream: str, text: str) -> None:
        handler = self.handlers.get(stream)
        if handler is None or self.keep_handled:
            self.pieces[stream].append(text)
        if handler is not None:
            done = handler(text)
            if inspect.isawaitable(done):
                await done

    def text(self, stream: str) -> str:
        return "".join(self.pieces[stream])


async def stream_command(connection: Connection, sandbox_id: str, command: str, *, envs: dict[str, str] | None,
                         cwd: str | None, timeout: float | None, output: Output) -> tuple[int | None, bool]:
    """Runs one command, feeding ``output``; answers its exit code (None on timeout) and whether it timed out."""
    limit = MAX_TIMEOUT if timeout is None else min(max(timeout, 0.001), MAX_TIMEOUT)
    body = {"commands": [command], "timeout_ms": int(limit * 1000), "max_output_length": 1,
            "env": envs or {}, "workdir": cwd, "stream": True}
    # max_output_length only cuts the final output object, which is not used: the deltas carry everything.
    outcome: dict[str, Any] = {}
    async for event in connection.events("POST", f"/containers/{sandbox_id}/exec", json=body, timeout=None):
        kind = event.get("type")
        if kind == "container.exec.output.delta":
            for stream, text in event["delta"].items():
                await output.add(stream, text)
        elif kind == "container.exec.command.done":
            outcome = event["output"]["outcome"]
        elif kind == "error":
            raise APIError(500, str(event.get("message")), type=event.get("type"), code=event.get("code"))
    if outcome.get("type") == "exit":
        return int(outcome["exit_code"]), False
    return None, True


def _result(output: Output, exit_code: int | None, timed_out: bool) -> CommandResult:
    stdout, stderr = output.text("stdout"), output.text("stderr")
    if timed_out or exit_code != 0:
        raise CommandExitError(stdout, stderr, exit_code, timed_out=timed_out)
    return CommandResult(stdout, stderr, 0)


class AsyncCommandHandle:
    """A command running in the background: its output so far, ``wait()`` for its end, ``kill()``."""

    def __init__(self, commands: AsyncCommands, pid_file: str, output: Output,
                 task: asyncio.Task[tuple[int | None, bool]]) -> None:
        self._commands, self._pid_file, self._output, self._task = commands, pid_file, output, task

    @property
    def stdout(self) -> str:
        return self._output.text("stdout")

    @property
    def stderr(self) -> str:
        return self._output.text("stderr")

    async def wait(self) -> CommandResult:
        """Its result once it ends; raises ``CommandExitError`` for a non-zero exit or a timeout."""
        exit_code, timed_out = await asyncio.shield(self._task)
        return _result(self._output, exit_code, timed_out)

    async def kill(self) -> bool:
        """SIGKILLs the command and every process it started; False if it had ended already."""
        if self._task.done():
            return False
        pid = shlex.quote(self._pid_file)
        # The pid file may not be written yet when kill follows run at once: wait for it (5 s at most).
        await self._commands.run(f"for i in $(seq 50); do [ -s {pid} ] && break; sleep 0.1; done; "
                                 f"{_KILL_TREE} p=$(cat {pid}) && tree $p; rm -f {pid}; true", timeout=30)
        await asyncio.wait([self._task])
        return True


class AsyncCommands:
    def __init__(self, connection: Connection, sandbox_id: str) -> None:
        self._connection, self._sandbox_id = connection, sandbox_id

    @overload
    async def run(self, cmd: str, *, background: Literal[False] = ..., envs: dict[str, str] | None = ...,
                  cwd: str | None = ..., on_stdout: OutputHandler | None = ..., on_stderr: OutputHandler | None = ...,
                  timeout: float | None = ...) -> CommandResult: ...

    @overload
    async def run(self, cmd: str, *, background: Literal[True], envs: dict[str, str] | None = ...,
                  cwd: str | None = ..., on_stdout: OutputHandler | None = ..., on_stderr: OutputHandler | None = ...,
                  timeout: float | None = ...) -> AsyncCommandHandle: ...

    async def run(self, cmd: str, *, background: bool = False, envs: dict[str, str] | None = None,
                  cwd: str | None = None, on_stdout: OutputHandler | None = None,
                  on_stderr: OutputHandler | None = None,
                  timeout: float | None = DEFAULT_TIMEOUT) -> CommandResult | AsyncCommandHandle:
        """Runs ``cmd`` in the image's shell. Output reaches ``on_stdout``/``on_stderr`` as it is made.

        In the foreground the answer is a ``CommandResult`` (``CommandExitError`` for a non-zero exit
        or a timeout, as E2B does). With ``background=True`` it is a handle at once. ``timeout`` is in
        seconds, at most an hour (None: an hour).
        """
        output = Output(on_stdout, on_stderr)
        if not background:
            code, timed_out = await stream_command(self._connection, self._sandbox_id, cmd, envs=envs, cwd=cwd,
                                                   timeout=timeout, output=output)
            return _result(output, code, timed_out)
        pid_file = f"{PID_DIR}/{secrets.token_hex(8)}.pid"
        wrapped = (f"mkdir -p {PID_DIR} && echo $$ > {pid_file} && /bin/sh -c {shlex.quote(cmd)}; "
                   f"status=$?; rm -f {pid_file}; exit $status")
        task = asyncio.create_task(stream_command(self._connection, self._sandbox_id, wrapped, envs=envs, cwd=cwd,
                                                  timeout=timeout, output=output))
        return AsyncCommandHandle(self, pid_file, output, task)
