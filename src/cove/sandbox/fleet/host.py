"""One node's containers behind a Ray actor: the one-machine engine, fenced by an incarnation.

A ``SandboxHost`` runs on every fleet node (pinned there by the custom resource ``cove_host:<node>``)
and owns that node's containers through an ordinary ``SandboxEngine`` (``LinuxEngine`` in production,
made by ``linux_host``). It adds only what a remote owner needs:

- An *incarnation*, new each time the host starts or is reset. Every call names the incarnation it was
  placed under; a host refuses calls for another one (``ContainerLost``). So a create that Ray delivers to a
  host restarted after a crash cannot start a container that the registry already counts as lost, and
  a node that was declared dead while hung cannot go on serving containers that were given up.
- ``reset``: a node that comes back after it was declared lost destroys what it still holds and takes
  a new incarnation, so a rejoining node always starts empty.
- The engine's egress decisions, kept (``EgressBuffer``) until a replica takes them (``take_egress``) for
  the containers' audit trails.

Containers are not the Ray worker's: the engine starts them detached (runc) and, unlike on one machine,
does not make itself their subreaper, so their inits belong to the machine's init. They survive the
worker, and the engine of the host Ray restarts removes whatever the dead one left (``LinuxEngine.start``).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any, Literal

import ray

from cove.errors import ContainerLost, InvalidRequest, NotFound
from cove.sandbox.base import (
    CommandOutput,
    Files,
    Limits,
    OutputCallback,
    Sandbox,
    SandboxEngine,
    Screen,
    SkillFile,
    Terminal,
    TerminalRequest,
)
from cove.sandbox.fleet.calls import ExecRequest, serve
from cove.sandbox.fleet.egress import EgressBatch, EgressBuffer
from cove.sandbox.fleet.placement import NodeReport
from cove.sandbox.fleet.relay import End, Relay, SocketEnd, Ticket

HostEngine = tuple[SandboxEngine, Callable[[], frozenset[str]]]
"""What a host runs on: an engine, and what tells which images the node has on disk."""

STREAM_UNREAD = 8
"""Chunks a streaming call (a file's bytes) yields ahead of what the replica has read."""
FILE_CALLS = frozenset({"stat", "read", "write", "delete", "list_dir", "walk_files"})
"""``Files`` methods a host forwards (``stream`` has its own generator)."""
StreamKind = Literal["port", "terminal", "channel", "vnc"]
"""What ``SandboxHost.open_stream`` opens: ``connect_port``, ``terminal``, ``channel``, ``display().vnc()``."""


def load_factory(path: str) -> Callable[[str], HostEngine]:
    """``module:function`` -> the function, called with the node's name (so that tests and the bench can
    run hosts on a simulated engine)."""
    module, _, name = path.partition(":")
    factory: Callable[[str], HostEngine] = getattr(importlib.import_module(module), name)
    return factory


def linux_host(_node: str) -> HostEngine:
    """The production host: ``LinuxEngine`` with the node's own settings (``COVE_*`` in the environment
    of its ``ray start``), as ``cove serve`` builds it on one machine."""
    from cove.config import Settings
    from cove.sandbox.images.store import ImageStore
    from cove.sandbox.linux.engine import LinuxEngine

    settings = Settings()
    images = ImageStore(settings.image_root, settings.subuid_base)
    return LinuxEngine(settings, images, subreaper=False), lambda: frozenset(image.name for image in images.list())


class SandboxHost:
    """The actor's class (``engine.host_actor`` wraps it with ``ray.remote``)."""

    def __init__(self, node: str, factory: str, memory: int, cpus: float, slots: int) -> None:
        self.node = node
        self.memory, self.cpus, self.slots = memory, cpus, slots
        self.engine, self._images = load_factory(factory)(node)
        self._egress = EgressBuffer()
        self.engine.watch_egress(self._egress.add)
        self.incarnation = uuid.uuid4().hex
        self._held: set[str] = set()
        self._started = asyncio.Lock()
        self._ready = False
        self._relay: Relay | None = None

    async def report(self) -> NodeReport:
        """Starts the engine on first call (cleaning what a crashed host left), then says what the node has."""
        async with self._started:
            if not self._ready:
                await self.engine.start()
                self._ready = True
        return NodeReport(self.node, self.incarnation, self.memory, self.cpus, self.slots,
                          await asyncio.to_thread(self._images))

    async def reset(self) -> NodeReport:
        """Destroys every container this host holds and takes a new incarnation (a node back from lost)."""
        self.incarnation = uuid.uuid4().hex
        held, self._held = self._held, set()
        if self._relay is not None:
            await self._relay.close()
        await asyncio.gather(*(self.engine.destroy(container_id) for container_id in held), return_exceptions=True)
        return await self.report()

    def take_egress(self) -> EgressBatch:
        """The egress decisions made since the last call (each handed out once, to whichever replica asks)."""
        return self._egress.take()

    def pid(self) -> int:
        return os.getpid()

    def _check(self, incarnation: str, container_id: str) -> None:
        if incarnation != self.incarnation:
            raise ContainerLost(container_id)

    async def _sandbox(self, incarnation: str, container_id: str, limits: Limits) -> Sandbox:
        """The container, if the call names this host's incarnation."""
        self._check(incarnation, container_id)
        return await self.engine.get(container_id, limits)

    async def create(self, incarnation: str, container_id: str, image: str, limits: Limits,
                     snapshot_id: str | None) -> bool:
        """Makes the container; returns whether it has a display (so the replica need not ask)."""
        self._check(incarnation, container_id)
        self._held.add(container_id)
        try:
            sandbox = await self.engine.create(container_id, image, limits, snapshot_id=snapshot_id)
        except BaseException:
            self._held.discard(container_id)
            raise
        return sandbox.has_display

    async def files(self, incarnation: str, container_id: str, limits: Limits, call: str,
                    args: tuple[Any, ...]) -> Any:
        sandbox = await self._sandbox(incarnation, container_id, limits)
        if call not in FILE_CALLS:
            raise NotFound(f"No file call {call!r}.")
        files: Files = await sandbox.files()
        return await getattr(files, call)(*args)

    @ray.method(_generator_backpressure_num_objects=STREAM_UNREAD)
    async def read_stream(self, incarnation: str, container_id: str, limits: Limits,
                          path: str) -> AsyncIterator[int | bytes]:
        """The file's size, then its bytes, read as the replica takes them (``STREAM_UNREAD`` ahead)."""
        files = await (await self._sandbox(incarnation, container_id, limits)).files()
        size, chunks = await files.stream(path)
        yield size
        async for chunk in chunks:
            yield chunk

    async def stop(self, incarnation: str, container_id: str) -> None:
        self._check(incarnation, container_id)
        await self.engine.stop(container_id)

    async def destroy(self, incarnation: str, container_id: str) -> None:
        self._check(incarnation, container_id)
        self._held.discard(container_id)
        await self.engine.destroy(container_id)

    async def snapshot(self, incarnation: str, container_id: str, snapshot_id: str) -> int:
        self._check(incarnation, container_id)
        return await self.engine.snapshot(container_id, snapshot_id)

    async def delete_snapshot(self, snapshot_id: str) -> None:
        await self.engine.delete_snapshot(snapshot_id)

    async def held(self) -> int:
        return len(self._held)

    # -- what the one-machine ``Sandbox`` offers beyond commands and files ------------------------
    async def has_display(self, incarnation: str, container_id: str, limits: Limits) -> bool:
        return (await self._sandbox(incarnation, container_id, limits)).has_display

    async def pause(self, incarnation: str, container_id: str, limits: Limits) -> None:
        await (await self._sandbox(incarnation, container_id, limits)).pause()

    async def resume(self, incarnation: str, container_id: str, limits: Limits) -> None:
        await (await self._sandbox(incarnation, container_id, limits)).resume()

    async def add_skill(self, incarnation: str, container_id: str, limits: Limits, name: str,
                        files: list[SkillFile]) -> str:
        return await (await self._sandbox(incarnation, container_id, limits)).add_skill(name, files)

    async def display(self, incarnation: str, container_id: str, limits: Limits, screen: Screen | None,
                      call: Literal["start", "act", "screenshot"], actions: list[dict[str, Any]]) -> Any:
        """Starts the display (``start``: returns its ``Screen``), or acts on it / takes a screenshot
        (returns the PNG)."""
        display = await (await self._sandbox(incarnation, container_id, limits)).display(screen)
        if call == "start":
            return display.screen
        if call == "act":
            return await display.act(actions)
        return await display.screenshot()

    async def open_stream(self, incarnation: str, container_id: str, limits: Limits, kind: StreamKind,
                          args: Any) -> Ticket:
        """Opens the container's end of a byte stream (``StreamKind``: ``args`` is the port, the
        ``TerminalRequest``, the argv, or the ``Screen``) and offers it on the node's relay."""
        sandbox = await self._sandbox(incarnation, container_id, limits)
        relay = self._relay_here()
        relay.check_room()
        end: End
        if kind == "port":
            end = await SocketEnd.of(await sandbox.connect_port(int(args)))  # refused: OSError, as on one machine
        elif kind == "terminal":
            assert isinstance(args, TerminalRequest)
            end = await sandbox.terminal(args)
        elif kind == "channel":
            end = await sandbox.channel([str(arg) for arg in args])
        elif kind == "vnc":
            end = await (await sandbox.display(args)).vnc()
        else:
            raise InvalidRequest(f"No stream kind {kind!r}.")
        return await relay.offer(end)

    async def open_calls(self) -> Ticket:
        """A calls session on the node's relay: the replica's path for exec (``calls.py``)."""
        return await self._relay_here().offer(partial(serve, self._exec_request))

    async def _exec_request(self, request: ExecRequest, on_output: OutputCallback | None) -> CommandOutput:
        """A command from an exec session."""
        sandbox = await self._sandbox(request.incarnation, request.container_id, request.limits)
        return await sandbox.exec(request.command, on_output)

    def _relay_here(self) -> Relay:
        """The node's relay, made on first use."""
        if self._relay is None:
            self._relay = Relay(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
        return self._relay

    def _terminal(self, incarnation: str, stream_id: str) -> Terminal:
        stream = self._relay.streams.get(stream_id) if self._relay is not None else None
        if incarnation != self.incarnation or stream is None or not isinstance(stream.end, Terminal):
            raise NotFound("The terminal is closed.", code="terminal_closed")
        return stream.end

    async def resize(self, incarnation: str, stream_id: str, cols: int, rows: int) -> None:
        self._terminal(incarnation, stream_id).resize(cols, rows)

    async def wait(self, incarnation: str, stream_id: str) -> int:
        """A terminal's exit code, once its program has ended (or the terminal was closed)."""
        return await self._terminal(incarnation, stream_id).wait()
