"""The fleet as a ``SandboxEngine``: every call goes to the ``SandboxHost`` of the container's node.

The service and tools layers keep calling ``create``/``get``/``exec``/files as on one machine; this
engine finds the node (``Placement``, in the database), forwards the call through Ray with a deadline
(commands go through the node's relay instead, ``calls.py``: faster), and turns Ray's failures into
Cove's: a node that does not answer in time, or dies with the call in flight, is 503
``sandbox_unavailable`` (the call may or may not have run); a container whose node was lost is 410
``container_lost``. A watcher asks every node for its report each ``COVE_FLEET_CHECK_SECONDS``: that is
how lost nodes are found (their containers marked lost, creates kept away from them) and how a node
that comes back is reconciled (it starts empty, under a new incarnation). The same check collects the
nodes' egress decisions for the audit trail (``watch_egress``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import ray
from ray.exceptions import RayError, RayTaskError

from cove.errors import (
    ContainerLost,
    CoveError,
    NotFound,
    SandboxError,
    SandboxUnavailable,
    SnapshotLost,
    TooManyRequests,
)
from cove.sandbox.base import (
    WALK_VISITS,
    Channel,
    Command,
    CommandOutput,
    Display,
    EgressCallback,
    Entry,
    FileContent,
    Files,
    Limits,
    OutputCallback,
    Sandbox,
    SandboxEngine,
    Screen,
    SkillFile,
    Terminal,
    TerminalRequest,
    memory_bytes,
)
from cove.sandbox.fleet.calls import CallsClient, ExecRequest
from cove.sandbox.fleet.egress import EGRESS_KEPT, EgressBatch
from cove.sandbox.fleet.host import SandboxHost, StreamKind
from cove.sandbox.fleet.placement import Assignment, Need, NodeReport, Placement
from cove.sandbox.fleet.relay import Ticket
from cove.sandbox.fleet.streams import RemoteChannel, RemoteDisplay, RemoteTerminal, connect

log = logging.getLogger(__name__)

NAMESPACE = "cove"
HOST_RESOURCE = "cove_host:"
"""A node offers ``cove_host:<node>: 1`` (``ray start --resources``): its host actor takes it, so there is
one per node and it lives nowhere else."""
SLOTS_RESOURCE = "cove_slots"
"""Containers a node runs at most (``ray start --resources``); without it, ``_DEFAULT_SLOTS``."""
_DEFAULT_SLOTS = 100
_CREATE_ATTEMPTS = 3
"""Placements one create tries (each after a node failed it) before it gives up with 503."""
_START_TIMEOUT = 60.0
"""Seconds the server waits at start for the hosts' first reports (Ray starts a worker for each new one)."""
_DISPLAY_SECONDS = 60.0
"""What a display call may take beyond the call deadline: starting the display (Xvfb, Chromium: up to
30 s on a busy node) and a batch of actions (typing 10,000 characters takes ~20 s)."""

HostHandle = Any
"""A ``SandboxHost`` actor's handle (Ray's own typing does not follow ``.remote`` calls to its methods)."""


@dataclass(frozen=True)
class NodeOffer:
    """A live Ray node that offers a host, with the size its resources give it."""

    node: str
    memory: int
    cpus: float
    slots: int


def offers(nodes: Iterable[dict[str, Any]]) -> list[NodeOffer]:
    """The fleet's nodes among ``ray.nodes()``: alive, with a ``cove_host:<node>`` resource."""
    found = []
    for info in nodes:
        resources = info.get("Resources", {})
        for key in resources:
            if info.get("Alive") and key.startswith(HOST_RESOURCE):
                found.append(NodeOffer(key.removeprefix(HOST_RESOURCE), int(resources.get("memory", 0)),
                                       float(resources.get("CPU", 1)),
                                       int(resources.get(SLOTS_RESOURCE, _DEFAULT_SLOTS))))
    return found


def host_actor(offer: NodeOffer, factory: str) -> HostHandle:
    """The node's host: named, so every API replica finds the same one; detached, so it outlives the
    replica that made it; restarted by Ray when its node comes back (empty, a new incarnation)."""
    remote = ray.remote(SandboxHost)
    handle: HostHandle = remote.options(
        name=f"cove-host-{offer.node}", namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        resources={HOST_RESOURCE + offer.node: 1}, num_cpus=0, max_restarts=-1, max_task_retries=0,
        max_concurrency=1000,
    ).remote(offer.node, factory, offer.memory, offer.cpus, offer.slots)
    return handle


class FleetEngine(SandboxEngine):
    def __init__(self, placement: Placement, *, address: str, node_ip: str | None, call_timeout: float,
                 check_seconds: float, host_factory: str = "cove.sandbox.fleet.host:linux_host") -> None:
        self.placement = placement
        self.address, self.node_ip = address, node_ip
        self.call_timeout, self.check_seconds = call_timeout, check_seconds
        self.host_factory = host_factory
        self.hosts: dict[str, HostHandle] = {}
        self.live: dict[str, NodeReport] = {}
        """Nodes that answered the last check, by name: creates go only to these."""
        self.lost: set[str] = set()
        self._assignments: dict[str, Assignment] = {}
        """Where containers are, as read from the registry: it only changes when a node is lost, and then
        the check drops the node's entries, so exec does not pay a database round trip."""
        self._incarnations: dict[str, str] = {}
        """Each node's incarnation when it last answered (also after it was lost)."""
        self._displays: dict[str, bool] = {}
        """Whether each container has a display, as its host said at create (or at this replica's first
        ``get``): ``Sandbox.has_display`` is a property, asked before anything runs."""
        self._calls: dict[str, CallsClient] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._on_egress: EgressCallback | None = None

    def watch_egress(self, callback: EgressCallback) -> None:
        """The nodes' egress decisions, as this replica's checks collect them (each node hands each
        decision to one replica only)."""
        self._on_egress = callback

    async def start(self) -> None:
        if not ray.is_initialized():
            # Ray's driver takes over SIGTERM and SIGINT (exiting at once); the server's own handlers
            # must stay, or a stop would skip the graceful shutdown.
            kept = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
            ray.init(address=self.address, _node_ip_address=self.node_ip, namespace=NAMESPACE,
                     log_to_driver=False, logging_level=logging.WARNING)
            for sig, handler in kept.items():
                signal.signal(sig, handler)
        await self.check(_START_TIMEOUT)  # a new host's worker takes seconds to start
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                await self.check()
            except Exception:
                log.exception("fleet check failed")

    async def check(self, within: float | None = None) -> None:
        """Finds new nodes (making their hosts), asks every host for its report (within ``within`` seconds,
        default ``COVE_FLEET_CALL_TIMEOUT``), and records the outcome: nodes that did not answer are lost,
        nodes that answer again start empty."""
        for offer in offers(await asyncio.to_thread(ray.nodes)):
            if offer.node not in self.hosts:
                self.hosts[offer.node] = host_actor(offer, self.host_factory)
        nodes = list(self.hosts)
        answers = await asyncio.gather(*(self.call(self.hosts[node].report.remote(), within) for node in nodes),
                                       return_exceptions=True)
        live: dict[str, NodeReport] = {}
        for node, answer in zip(nodes, answers, strict=True):
            if isinstance(answer, BaseException):
                if node not in self.lost:
                    self.lost.add(node)
                    if (client := self._calls.pop(node, None)) is not None:
                        await client.close()
                    count = await self.placement.lose(node)
                    log.warning("fleet node %s lost (%s); %d containers lost with it", node, answer, count)
                continue
            report = cast(NodeReport, answer)
            if node in self.lost:
                # Back from lost: a hung node that resumed still has its incarnation and containers the
                # registry gave up; it destroys them and starts over, like a node that restarted.
                if report.incarnation == self._incarnations.get(node):
                    report = await self.call(self.hosts[node].reset.remote())
                self.lost.discard(node)
                log.warning("fleet node %s rejoined", node)
            live[node] = report
            self._incarnations[node] = report.incarnation
        await self.placement.seen(list(live.values()))
        self.live = live
        self._assignments = {cid: a for cid, a in self._assignments.items()
                             if a.node in live and live[a.node].incarnation == a.incarnation}
        self._displays = {cid: shown for cid, shown in self._displays.items() if cid in self._assignments}
        await self.collect_egress(list(live))

    async def collect_egress(self, nodes: list[str]) -> None:
        """Takes the nodes' egress decisions and hands them to the callback: at each check, and as a
        command of a container with a network policy ends (so a response's tool call is still using the
        container and gets them credited). A call that fails after its node handed them out loses them
        (they are never handed out twice)."""
        if self._on_egress is None:
            return
        batches = await asyncio.gather(*(self.call(self.hosts[node].take_egress.remote()) for node in nodes),
                                       return_exceptions=True)
        for node, batch in zip(nodes, batches, strict=True):
            if isinstance(batch, BaseException):
                log.warning("egress decisions of fleet node %s not collected: %s", node, batch)
                continue
            taken = cast(EgressBatch, batch)
            if taken.dropped:
                log.warning("fleet node %s dropped %d egress decisions (more than %d waited for collection)",
                            node, taken.dropped, EGRESS_KEPT)
            for decision, project in taken.decisions:
                try:
                    self._on_egress(decision, project)
                except Exception:
                    log.exception("recording an egress decision of fleet node %s failed", node)

    async def call(self, ref: Awaitable[Any], within: float | None = None) -> Any:
        """One host call, within ``within`` seconds (default ``COVE_FLEET_CALL_TIMEOUT``), with Ray's
        errors made Cove's."""
        timeout = self.call_timeout if within is None else within
        try:
            async with asyncio.timeout(timeout):
                return await ref
        except TimeoutError:
            raise SandboxUnavailable(f"The container's node did not answer within {timeout:g} s; the call may "
                                     "or may not have run.") from None
        except RayTaskError as error:
            if isinstance(error.cause, CoveError):
                raise error.cause from None
            raise SandboxError(f"The container's node failed: {error.cause}") from None
        except RayError as error:
            raise SandboxUnavailable(f"The container's node is unavailable ({type(error).__name__}); the call "
                                     "may or may not have run.") from None

    async def create(self, container_id: str, image: str, limits: Limits, *,
                     snapshot_id: str | None = None) -> Sandbox:
        """Placed on the node with the most room, or, from a snapshot, on the node that holds the
        snapshot's files (``required``: no other node has them, so its being full is a 429)."""
        need = Need(memory_bytes(limits.memory), limits.cpus, image)
        required = None if snapshot_id is None else await self._snapshot_node(snapshot_id)
        avoid: set[str] = set()
        for _ in range(_CREATE_ATTEMPTS):
            candidates = [report for node, report in self.live.items()
                          if node not in avoid and required in (None, node)]
            if not candidates:
                break
            placed = await self.placement.place(container_id, need, candidates)
            if placed is None:
                raise TooManyRequests(
                    "No fleet node has room for another container of these limits." if required is None else
                    f"Fleet node {required}, which holds snapshot {snapshot_id} (a container made from it can "
                    "start only there), has no room for another container of these limits.", code="fleet_full")
            host = self.hosts[placed.node]
            try:
                shown = await self.call(host.create.remote(placed.incarnation, container_id, image, limits,
                                                           snapshot_id))
            except ContainerLost:  # the host restarted since its last report: learn its new incarnation
                await self.placement.forget(container_id)
                await self.check()
                continue
            except SandboxUnavailable:
                # It may have been made there: the node is asked to drop it, and the create goes elsewhere.
                await self.placement.forget(container_id)
                host.destroy.remote(placed.incarnation, container_id)
                avoid.add(placed.node)
                continue
            except BaseException:
                await self.placement.forget(container_id)
                raise
            self._assignments[container_id] = placed
            self._displays[container_id] = bool(shown)
            return RemoteSandbox(self, container_id, placed, limits, bool(shown))
        if required is not None:
            raise SandboxUnavailable(f"Fleet node {required}, which holds snapshot {snapshot_id}, is not answering; "
                                     "the container was not created.")
        raise SandboxUnavailable("No fleet node is answering; the container was not created.")

    async def _snapshot_node(self, snapshot_id: str) -> str:
        """The node that holds the snapshot's files (its own disk): 410 if that node was lost."""
        kept = await self.placement.snapshot(snapshot_id)
        if kept is None:
            raise NotFound(f"No snapshot found with id '{snapshot_id}' on the fleet.", code="snapshot_not_found")
        if kept.lost or kept.node in self.lost:
            raise SnapshotLost(snapshot_id, kept.node)
        return kept.node

    async def _assignment(self, container_id: str) -> Assignment:
        placed = self._assignments.get(container_id)
        if placed is None:
            placed = await self.placement.assignment(container_id)
            if placed is None:
                raise NotFound(f"Container {container_id} is on no fleet node.", code="container_not_found")
            if placed.state == "lost":
                raise ContainerLost(container_id)
            self._assignments[container_id] = placed
        return placed

    async def get(self, container_id: str, limits: Limits) -> Sandbox:
        placed = await self._assignment(container_id)
        shown = self._displays.get(container_id)
        if shown is None:
            shown = self._displays[container_id] = bool(
                await self.call(self.host(placed).has_display.remote(placed.incarnation, container_id, limits)))
        return RemoteSandbox(self, container_id, placed, limits, shown)

    def calls(self, placed: Assignment) -> CallsClient:
        """The exec session with the container's node (``calls.py``), opened on first use."""
        host = self.host(placed)
        client = self._calls.get(placed.node)
        if client is None:
            client = self._calls[placed.node] = CallsClient(lambda: self.call(host.open_calls.remote()))
        return client

    def host(self, placed: Assignment) -> HostHandle:
        if placed.node in self.lost or placed.node not in self.hosts:
            raise SandboxUnavailable(f"Fleet node {placed.node} is not answering; the call did not run.")
        return self.hosts[placed.node]

    async def stop(self, container_id: str) -> None:
        placed = await self._assignment(container_id)
        await self.call(self.host(placed).stop.remote(placed.incarnation, container_id))

    async def destroy(self, container_id: str) -> None:
        try:
            placed = await self._assignment(container_id)
        except (ContainerLost, NotFound):
            await self.placement.forget(container_id)  # nothing is left on any node
            return
        await self.call(self.host(placed).destroy.remote(placed.incarnation, container_id))
        self._assignments.pop(container_id, None)
        self._displays.pop(container_id, None)
        await self.placement.forget(container_id)

    async def snapshot(self, container_id: str, snapshot_id: str) -> int:
        """Taken on the container's node, which keeps the files; the registry notes the node first, so
        that no snapshot's files are ever on a node it does not know of."""
        placed = await self._assignment(container_id)
        host = self.host(placed)
        await self.placement.keep_snapshot(snapshot_id, placed.node)
        try:
            size: int = await self.call(host.snapshot.remote(placed.incarnation, container_id, snapshot_id))
        except BaseException:
            host.delete_snapshot.remote(snapshot_id)  # it may have been taken (a call that timed out)
            await self.placement.forget_snapshot(snapshot_id)
            raise
        return size

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Deleted on its node; a lost node's snapshots are only forgotten (their files went with it)."""
        kept = await self.placement.snapshot(snapshot_id)
        if kept is None:  # taken before the registry noted snapshots' nodes: any node may have it
            await asyncio.gather(*(self.call(self.hosts[node].delete_snapshot.remote(snapshot_id))
                                   for node in self.live), return_exceptions=True)
            return
        host = None if kept.lost or kept.node in self.lost else self.hosts.get(kept.node)
        if host is not None:
            try:
                await self.call(host.delete_snapshot.remote(snapshot_id))
            except SandboxUnavailable as error:
                log.warning("snapshot %s forgotten; its files may remain on fleet node %s: %s", snapshot_id,
                            kept.node, error.message)
        await self.placement.forget_snapshot(snapshot_id)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for client in self._calls.values():
            await client.close()
        ray.shutdown()  # the driver leaves; hosts and their containers stay


class RemoteSandbox(Sandbox):
    """A container on a fleet node; each call one host call with its own deadline."""

    def __init__(self, engine: FleetEngine, container_id: str, placed: Assignment, limits: Limits,
                 shown: bool) -> None:
        self.id = container_id
        self._engine, self._placed, self._limits = engine, placed, limits
        self._running = True
        self._paused = False
        self._shown = shown

    def _host(self) -> HostHandle:
        return self._engine.host(self._placed)

    async def exec(self, command: Command, on_output: OutputCallback | None = None) -> CommandOutput:
        deadline = command.timeout_ms / 1000 + self._engine.call_timeout
        request = ExecRequest(self._placed.incarnation, self.id, self._limits, command)
        self._running = True
        # Within the deadline: a client that reads streamed output slowly holds the command, as on one machine.
        output: CommandOutput = await self._engine.call(self._engine.calls(self._placed).exec(request, on_output),
                                                        deadline)
        if self._limits.network is not None:
            await self._engine.collect_egress([self._placed.node])
        return output

    async def files(self) -> Files:
        return RemoteFiles(self._engine, self._host(), self._placed, self.id, self._limits)

    async def stop(self) -> None:
        await self._engine.call(self._host().stop.remote(self._placed.incarnation, self.id))
        self._running = False

    @property
    def running(self) -> bool:
        """As of this handle's last call (asking the node would make a property a network call)."""
        return self._running

    @property
    def paused(self) -> bool:
        """As of this handle's last call, as ``running`` (the service keeps the truth in its row)."""
        return self._paused

    async def pause(self) -> None:
        await self._engine.call(self._host().pause.remote(self._placed.incarnation, self.id, self._limits))
        self._paused = True

    async def resume(self) -> None:
        await self._engine.call(self._host().resume.remote(self._placed.incarnation, self.id, self._limits))
        self._paused = False

    async def add_skill(self, name: str, files: Iterable[SkillFile]) -> str:
        path: str = await self._engine.call(self._host().add_skill.remote(self._placed.incarnation, self.id,
                                                                          self._limits, name, list(files)))
        return path

    async def _ticket(self, kind: StreamKind, args: Any) -> Ticket:
        ref = self._host().open_stream.remote(self._placed.incarnation, self.id, self._limits, kind, args)
        ticket: Ticket = await self._engine.call(_refusals(ref) if kind == "port" else ref)
        return ticket

    async def connect_port(self, port: int) -> socket.socket:
        return await connect(await self._ticket("port", port))

    async def terminal(self, request: TerminalRequest) -> Terminal:
        ticket = await self._ticket("terminal", request)
        host, incarnation = self._host(), self._placed.incarnation

        def call(name: str, args: tuple[Any, ...], within: float | None) -> Awaitable[Any]:
            return self._engine.call(getattr(host, name).remote(incarnation, ticket.stream_id, *args), within)

        return await RemoteTerminal.open(ticket, call)

    async def channel(self, argv: list[str]) -> Channel:
        return await RemoteChannel.open(await self._ticket("channel", argv))

    @property
    def has_display(self) -> bool:
        return self._shown

    async def display(self, screen: Screen | None = None) -> Display:
        if not self._shown:
            return await super().display(screen)
        host, args = self._host(), (self._placed.incarnation, self.id, self._limits)
        within = self._engine.call_timeout + _DISPLAY_SECONDS
        started: Screen = await self._engine.call(host.display.remote(*args, screen, "start", []), within)

        def call(name: str, call_args: tuple[Any, ...], deadline: float | None) -> Awaitable[Any]:
            return self._engine.call(host.display.remote(*args, started, name, *call_args), deadline)

        async def vnc() -> Channel:
            return await RemoteChannel.open(await self._ticket("vnc", started))

        return RemoteDisplay(started, call, vnc, within)


async def _refusals(ref: Awaitable[Any]) -> Any:
    """The host call's answer, or the ``OSError`` the node met (nothing listening on a port is a
    ``ConnectionRefusedError`` on a fleet as on one machine, not a failure of the node)."""
    try:
        return await ref
    except RayTaskError as error:
        if isinstance(error.cause, OSError) and not isinstance(error.cause, CoveError):
            raise error.cause from None
        raise


class RemoteFiles(Files):
    def __init__(self, engine: FleetEngine, host: HostHandle, placed: Assignment, container_id: str,
                 limits: Limits) -> None:
        self._engine, self._host = engine, host
        self._args = (placed.incarnation, container_id, limits)

    async def _call(self, name: str, *args: Any) -> Any:
        return await self._engine.call(self._host.files.remote(*self._args, name, args))

    async def stat(self, path: str) -> Entry | None:
        entry: Entry | None = await self._call("stat", path)
        return entry

    async def read(self, path: str, limit: int) -> FileContent:
        content: FileContent = await self._call("read", path, limit)
        return content

    async def stream(self, path: str) -> tuple[int, AsyncIterator[bytes]]:
        refs = self._host.read_stream.remote(*self._args, path).__aiter__()
        size: int = await self._engine.call(await self._engine.call(refs.__anext__()))

        async def chunks() -> AsyncIterator[bytes]:
            async for ref in refs:
                chunk: bytes = await self._engine.call(ref)
                yield chunk

        return size, chunks()

    async def write(self, path: str, chunks: Iterable[bytes], mode: int | None = None) -> int:
        size: int = await self._call("write", path, list(chunks), mode)
        return size

    async def delete(self, path: str) -> None:
        await self._call("delete", path)

    async def list_dir(self, path: str, depth: int = 1, limit: int = 10_000,
                       visits: int = WALK_VISITS) -> list[Entry]:
        entries: list[Entry] = await self._call("list_dir", path, depth, limit, visits)
        return entries

    async def walk_files(self, path: str, limit: int = 10_000, visits: int = WALK_VISITS) -> list[Entry]:
        entries: list[Entry] = await self._call("walk_files", path, limit, visits)
        return entries
