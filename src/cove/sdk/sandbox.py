"""``Sandbox``: the blocking face of ``AsyncSandbox`` (E2B's ``Sandbox``); every call runs the async
SDK's coroutine on the SDK's own loop (``_portal``), so the two cannot drift apart."""

from __future__ import annotations

import builtins
from types import TracebackType
from typing import IO, Literal, overload

from cove.sdk import _portal
from cove.sdk.async_sandbox import AsyncSandbox, Network
from cove.sdk.commands import AsyncCommandHandle, AsyncCommands, OutputHandler
from cove.sdk.files import AsyncFiles, AsyncWatchHandle, EventHandler
from cove.sdk.models import (
    CommandResult,
    EntryInfo,
    Execution,
    FilesystemEvent,
    PtySize,
    SandboxInfo,
    SnapshotInfo,
    WriteInfo,
)
from cove.sdk.pty import AsyncPty, AsyncPtyHandle, DataHandler

call = _portal.call


class CommandHandle:
    def __init__(self, handle: AsyncCommandHandle) -> None:
        self._handle = handle

    @property
    def stdout(self) -> str:
        return self._handle.stdout

    @property
    def stderr(self) -> str:
        return self._handle.stderr

    def wait(self) -> CommandResult:
        return call(self._handle.wait())

    def kill(self) -> bool:
        return call(self._handle.kill())


class Commands:
    def __init__(self, commands: AsyncCommands) -> None:
        self._commands = commands

    @overload
    def run(self, cmd: str, *, background: Literal[False] = ..., envs: dict[str, str] | None = ...,
            cwd: str | None = ..., on_stdout: OutputHandler | None = ..., on_stderr: OutputHandler | None = ...,
            timeout: float | None = ...) -> CommandResult: ...

    @overload
    def run(self, cmd: str, *, background: Literal[True], envs: dict[str, str] | None = ...,
            cwd: str | None = ..., on_stdout: OutputHandler | None = ..., on_stderr: OutputHandler | None = ...,
            timeout: float | None = ...) -> CommandHandle: ...

    def run(self, cmd: str, *, background: bool = False, envs: dict[str, str] | None = None,
            cwd: str | None = None, on_stdout: OutputHandler | None = None, on_stderr: OutputHandler | None = None,
            timeout: float | None = 60.0) -> CommandResult | CommandHandle:
        """``AsyncCommands.run``; callbacks run on the SDK's thread."""
        if background:
            return CommandHandle(call(self._commands.run(cmd, background=True, envs=envs, cwd=cwd,
                                                         on_stdout=on_stdout, on_stderr=on_stderr, timeout=timeout)))
        return call(self._commands.run(cmd, envs=envs, cwd=cwd, on_stdout=on_stdout, on_stderr=on_stderr,
                                       timeout=timeout))


class WatchHandle:
    def __init__(self, handle: AsyncWatchHandle) -> None:
        self._handle = handle

    def get_new_events(self) -> list[FilesystemEvent]:
        return self._handle.get_new_events()

    def stop(self) -> None:
        call(self._handle.stop())


class Files:
    def __init__(self, files: AsyncFiles) -> None:
        self._files = files

    @overload
    def read(self, path: str, format: Literal["text"] = ...) -> str: ...

    @overload
    def read(self, path: str, format: Literal["bytes"]) -> bytes: ...

    def read(self, path: str, format: Literal["text", "bytes"] = "text") -> str | bytes:
        if format == "bytes":
            return call(self._files.read(path, format="bytes"))
        return call(self._files.read(path))

    def write(self, path: str, data: str | bytes | IO[bytes]) -> WriteInfo:
        return call(self._files.write(path, data))

    def list(self, path: str, depth: int = 1) -> list[EntryInfo]:
        return call(self._files.list(path, depth))

    def exists(self, path: str) -> bool:
        return call(self._files.exists(path))

    def remove(self, path: str) -> None:
        call(self._files.remove(path))

    def make_dir(self, path: str) -> None:
        call(self._files.make_dir(path))

    def watch_dir(self, path: str, on_event: EventHandler | None = None, *, recursive: bool = False,
                  timeout: float | None = None) -> WatchHandle:
        return WatchHandle(call(self._files.watch_dir(path, on_event, recursive=recursive, timeout=timeout)))


class PtyHandle:
    def __init__(self, handle: AsyncPtyHandle) -> None:
        self._handle = handle

    @property
    def output(self) -> bytes:
        return bytes(self._handle.output)

    @property
    def exit_code(self) -> int | None:
        return self._handle.exit_code

    def send_stdin(self, data: bytes | str) -> None:
        call(self._handle.send_stdin(data))

    def resize(self, size: PtySize) -> None:
        call(self._handle.resize(size))

    def wait(self) -> int | None:
        return call(self._handle.wait())

    def kill(self) -> None:
        call(self._handle.kill())


class Pty:
    def __init__(self, pty: AsyncPty) -> None:
        self._pty = pty

    def create(self, size: PtySize | None = None, *, command: str | None = None,
               on_data: DataHandler | None = None) -> PtyHandle:
        return PtyHandle(call(self._pty.create(size, command=command, on_data=on_data)))


class Sandbox:
    """A Cove container, E2B-style: ``Sandbox()`` (or ``Sandbox.create(...)``) makes one; use it as a
    context manager (killed at the end) or call ``kill()``; ``close()`` only lets go of it."""

    def __init__(self, image: str | None = None, *, network: Network = None, timeout: float | None = None,
                 name: str = "sandbox", memory_limit: str | None = None, cpu_limit: float | None = None,
                 snapshot_id: str | None = None, base_url: str | None = None, api_key: str | None = None) -> None:
        self._wrap(call(AsyncSandbox.create(image, network=network, timeout=timeout, name=name,
                                            memory_limit=memory_limit, cpu_limit=cpu_limit, snapshot_id=snapshot_id,
                                            base_url=base_url, api_key=api_key)))

    def _wrap(self, sandbox: AsyncSandbox) -> None:
        self._async = sandbox
        self.sandbox_id = sandbox.sandbox_id
        self.commands = Commands(sandbox.commands)
        self.files = Files(sandbox.files)
        self.pty = Pty(sandbox.pty)

    @classmethod
    def _of(cls, sandbox: AsyncSandbox) -> Sandbox:
        made = cls.__new__(cls)
        made._wrap(sandbox)
        return made

    @classmethod
    def create(cls, image: str | None = None, *, network: Network = None, timeout: float | None = None,
               name: str = "sandbox", memory_limit: str | None = None, cpu_limit: float | None = None,
               snapshot_id: str | None = None, base_url: str | None = None, api_key: str | None = None) -> Sandbox:
        return cls(image, network=network, timeout=timeout, name=name, memory_limit=memory_limit,
                   cpu_limit=cpu_limit, snapshot_id=snapshot_id, base_url=base_url, api_key=api_key)

    @classmethod
    def connect(cls, sandbox_id: str, *, base_url: str | None = None, api_key: str | None = None) -> Sandbox:
        return cls._of(call(AsyncSandbox.connect(sandbox_id, base_url=base_url, api_key=api_key)))

    @staticmethod
    def list(*, base_url: str | None = None, api_key: str | None = None,
             limit: int | None = None) -> list[SandboxInfo]:
        return call(AsyncSandbox.list(base_url=base_url, api_key=api_key, limit=limit))

    @property
    def id(self) -> str:
        return self.sandbox_id

    @property
    def info(self) -> SandboxInfo:
        return self._async.info

    def get_info(self) -> SandboxInfo:
        return call(self._async.get_info())

    def is_running(self) -> bool:
        return call(self._async.is_running())

    def run_code(self, code: str, *, on_stdout: OutputHandler | None = None, on_stderr: OutputHandler | None = None,
                 timeout: float | None = None) -> Execution:
        return call(self._async.run_code(code, on_stdout=on_stdout, on_stderr=on_stderr, timeout=timeout))

    def snapshot(self, name: str | None = None) -> SnapshotInfo:
        return call(self._async.snapshot(name))

    def fork(self, count: int = 1) -> builtins.list[Sandbox]:
        return [Sandbox._of(forked) for forked in call(self._async.fork(count))]

    def get_host(self, port: int, *, expires_in: int = 3600) -> str:
        return call(self._async.get_host(port, expires_in=expires_in))

    def pause(self) -> SandboxInfo:
        return call(self._async.pause())

    def resume(self) -> SandboxInfo:
        return call(self._async.resume())

    def kill(self) -> bool:
        return call(self._async.kill())

    def close(self) -> None:
        call(self._async.close())

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        call(self._async.__aexit__(kind, exc, tb))
