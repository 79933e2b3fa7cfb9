"""Containers as the API sees them: rows in the store joined to sandboxes in the engine.

Every method takes the caller's project; another project's ids behave as if they did not exist.
Creates and uses follow the project's rules and quotas (``service/projects.py``); a create checks the
quotas and inserts its row as one step under a lock row (``service/locks.py``), decided with the
other creates waiting in one transaction (``service/admission.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cove import telemetry
from cove.config import Settings
from cove.egress.policy import EgressPolicy
from cove.egress.proxy import Decision
from cove.errors import (
    Conflict,
    ContainerLost,
    CoveError,
    InvalidRequest,
    NotFound,
    SandboxUnavailable,
)
from cove.ids import new_id
from cove.sandbox.base import (
    Channel,
    Command,
    CommandOutput,
    Display,
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
from cove.service import locks
from cove.service.admission import KEPT, LIVE, SNAPSHOT_BYTES, Admissions, Room, check_disk
from cove.service.audit import AuditLog
from cove.service.objects import Container, ListPage
from cove.service.pagination import Page, paginate
from cove.service.projects import ProjectPolicies
from cove.service.secrets import SecretKeeper, network_limits, refuse_sealed
from cove.service.sweeper import Sweeper
from cove.store.db import Database
from cove.store.models import ContainerFileRow, ContainerRow, ReplicaRow, SnapshotRow

log = logging.getLogger(__name__)

MAX_COMMANDS = 64
MAX_COMMAND_CHARS = 1 << 20
MAX_EXEC_OUTPUT = 10_000_000
"""Characters of output one exec returns in all, so what one request makes the server hold is bounded:
each command keeps at most its ``max_output_length`` and its even share of this, plus what the commands
before it left unused (a flood in the first command cannot leave the last one nothing)."""


class ContainerService:
    def __init__(self, db: Database, engine: SandboxEngine, settings: Settings, *, policies: ProjectPolicies,
                 secrets: SecretKeeper, audit: AuditLog | None = None) -> None:
        self.db = db
        self.policies = policies
        self.engine = engine
        self.settings = settings
        self.audit = audit
        self.secrets = secrets
        self._expiry = Sweeper("container expiry", self._expire, settings.expiry_check_seconds)
        self._busy: Counter[str] = Counter()
        """In-flight uses per container: a container never expires under a running command."""
        self._responses: dict[str, list[str]] = {}
        """Responses using each container now; the latest is credited with its egress in the audit trail."""
        self._touches: set[asyncio.Task[None]] = set()
        """Uses being recorded in the store (``_touch``), awaited at shutdown."""
        self._epoch = os.urandom(4).hex()
        self._response_uses: Counter[str] = Counter()
        """Uses by responses per container since this server started (``generation``)."""
        self._held: dict[str, _Held] = {}
        """Live containers this server made or has looked up, with their limits: a command on one needs
        no database round trip and no secrets opened. Dropped when deleted or expired here."""
        self._admissions = Admissions(db, self._room)

    # -- create / read / delete -------------------------------------------------------------------
    async def create(self, project: str, *, name: str, image: str | None, memory_limit: str,
                     cpu_limit: float | None, expires_minutes: int | None,
                     network_policy: dict[str, Any], snapshot: SnapshotRow | None = None) -> Container:
        """A new container from ``image`` (or the server's default), or from ``snapshot``: its files
        and its image, whatever the request's ``image`` says (the request's limits and policy apply)."""
        self.policies.check_containers(project)
        cpus = self.settings.default_cpu_limit if cpu_limit is None else cpu_limit
        if not 0.01 <= cpus <= self.settings.max_cpu_limit:
            raise InvalidRequest(f"cpu_limit must be between 0.01 and {self.settings.max_cpu_limit:g}.",
                                 param="cpu_limit")
        minutes = self.settings.container_idle_minutes if expires_minutes is None else expires_minutes
        if not 1 <= minutes <= 7 * 24 * 60:
            raise InvalidRequest("expires_after.minutes must be between 1 and 10080.",
                                 param="expires_after.minutes")
        refuse_sealed(network_policy, "network_policy")
        egress = network_limits(network_policy)
        self.policies.check_network(project, egress, "network_policy")
        image_name = snapshot.image if snapshot is not None else image or self.settings.default_image
        self.policies.check_image(project, image_name)
        return await self.create_checked(project, name=name, image=image_name, memory_limit=memory_limit, cpus=cpus,
                                         minutes=minutes, egress=egress, snapshot=snapshot)

    async def create_checked(self, project: str, *, name: str, image: str, memory_limit: str, cpus: float,
                             minutes: int, egress: EgressPolicy | None, snapshot: SnapshotRow | None) -> Container:
        """``create`` once the request is known to be allowed: quotas, the row, the container (and,
        from a snapshot, its file records). Forks come here with their parent's settings."""
        if snapshot is not None:
            self.check_holder(snapshot.holder, f"Snapshot '{snapshot.id}'", "used")
        now = int(time.time())
        container_id = new_id("cntr")
        row = ContainerRow(id=container_id, project=project, name=name, image=image,
                           status="running", memory_limit=memory_limit, cpu_limit=cpus,
                           expires_minutes=minutes, network_policy=policy_object(egress),
                           secrets=self.secrets.seal_container(egress, container_id), created_at=now,
                           last_active_at=now, holder=self.settings.replica)
        await self._admissions.admit(row, [] if snapshot is None else [
            ContainerFileRow(id=new_id("cfile"), container_id=container_id, **record) for record in snapshot.files])
        limits = Limits(memory=memory_limit, cpus=cpus, network=egress, project=project)
        try:
            started = time.perf_counter()
            await self.engine.create(row.id, image, limits, snapshot_id=snapshot.id if snapshot else None)
            telemetry.container_created(time.perf_counter() - started)
        except BaseException:
            async with self.db.begin() as session:
                await session.execute(delete(ContainerRow).where(ContainerRow.id == row.id))
            raise
        self._held[row.id] = _Held(row, limits)
        return Container.from_row(row)

    async def admit(self, project: str, memory_limit: str, image: str | None = None) -> None:
        """Refuses, as ``create`` would, a container of ``image`` (None: the default) that could not be
        created now: a response that will make one is refused up front rather than failing later. Only
        ``create``'s own check, under the lock, is final."""
        self.policies.check_containers(project)
        self.policies.check_image(project, image or self.settings.default_image)
        await self.db.run(lambda connection: self._room(connection).take(project, memory_limit))

    def _room(self, connection: Connection) -> Room:
        return Room(connection, self.policies.quotas, self.settings)

    async def check_snapshot_room(self, session: AsyncSession, project: str, size: int) -> None:
        """The ``disk`` quota for one more snapshot of ``size`` bytes."""
        disks = await session.scalar(select(func.count()).where(
            ContainerRow.project == project, ContainerRow.status.in_(KEPT))) or 0
        kept = await session.scalar(SNAPSHOT_BYTES, {"project": project}) or 0
        check_disk(self.policies.quotas(project), self.settings.disk_limit, disks, kept + size)

    async def get(self, project: str, container_id: str) -> Container:
        return Container.from_row(await self._row(project, container_id))

    async def _row(self, project: str, container_id: str) -> ContainerRow:
        async with self.db.begin() as session:
            row = await session.scalar(select(ContainerRow).where(
                ContainerRow.id == container_id, ContainerRow.project == project))
        if row is None:
            raise NotFound(f"No container found with id '{container_id}'.", param="container_id",
                           code="container_not_found")
        return row

    async def list_page(self, project: str, page: Page, name: str | None) -> ListPage[Container]:
        query = select(ContainerRow).where(ContainerRow.project == project)
        if name is not None:
            query = query.where(ContainerRow.name == name)
        async with self.db.begin() as session:
            rows, has_more = await paginate(session, query, ContainerRow, page)
        return ListPage.of([Container.from_row(row) for row in rows], has_more)

    async def delete(self, project: str, container_id: str) -> None:
        row = await self._row(project, container_id)
        self._check_holder(row, "deleted")
        self._held.pop(row.id, None)
        await self.engine.destroy(row.id)
        async with self.db.begin() as session:
            await session.execute(delete(ContainerRow).where(ContainerRow.id == row.id))

    # -- use ----------------------------------------------------------------------------------------
    @asynccontextmanager
    async def use(self, project: str, container_id: str, response_id: str | None = None) -> AsyncIterator[Sandbox]:
        """The live sandbox of an active container, kept from expiring while in use; the commands
        run through it go to the audit trail (with ``response_id`` when a response runs them)."""
        self.policies.check_containers(project)
        held = await self._live(project, container_id, "used")
        row = held.row
        if row.status == "paused":  # a command or a file on a paused container resumes it
            await self.resume(project, container_id)
        self._busy[row.id] += 1
        if response_id is not None:
            self._responses.setdefault(row.id, []).append(response_id)
            self._response_uses[row.id] += 1
        try:
            self._touch(row)
            sandbox = await self.engine.get(row.id, held.limits)
            yield sandbox if self.audit is None else AuditedSandbox(sandbox, self.audit, project, row.id, response_id)
        finally:
            self._busy[row.id] -= 1
            if not self._busy[row.id]:
                del self._busy[row.id]
            if response_id is not None:
                self._responses[row.id].remove(response_id)
                if not self._responses[row.id]:
                    del self._responses[row.id]
            self._touch(row)

    async def held(self, project: str, container_id: str, verb: str) -> tuple[ContainerRow, Limits]:
        """The row and limits (its secrets opened) of a container that keeps its files, running,
        paused or stopped (left so), or a 404/409 that says why it cannot be ``verb``."""
        held = await self._live(project, container_id, verb, wake=False)
        return held.row, held.limits

    # -- branches: whether a container is still as a response left it -------------------------------
    def generation(self, container_id: str) -> str:
        """Changes each time a response starts using the container (this server's epoch first, so
        a restart never makes an old value match again)."""
        return f"{self._epoch}:{self._response_uses[container_id]}"

    def claim(self, container_id: str, generation: str) -> bool:
        """Takes the container for a response continuing from the moment ``generation`` was read,
        if no response has used it since and none is using it now; a later claim from the same
        moment then fails (that branch gets a fork)."""
        if self.generation(container_id) != generation or self._responses.get(container_id):
            return False
        self._response_uses[container_id] += 1
        return True

    async def _live(self, project: str, container_id: str, verb: str, *, wake: bool = True) -> _Held:
        """The container, running or paused, as this server holds it (from the store the first time).
        A stopped one is started again (``wake``, within the project's quotas), or with ``wake``
        False answered as it is, stopped, its files untouched."""
        held = self._held.get(container_id)
        if held is None or held.row.project != project:
            row = await self._row(project, container_id)
            self._check_holder(row, verb)
            if row.status == "stopped" and wake:
                await self._wake(row)
            if row.status == "lost":  # its fleet node died (``service/fleet.py``)
                raise ContainerLost(row.id)
            if row.status not in (LIVE if wake else KEPT):
                raise Conflict(f"Container '{container_id}' has {row.status} and cannot be {verb}.",
                               param="container_id", code=f"container_{row.status}")
            held = _Held(row, Limits(memory=row.memory_limit, cpus=row.cpu_limit,
                                     network=self.secrets.container_egress(row), project=project))
            if row.status in LIVE:
                self._held[row.id] = held
        return held

    def _check_holder(self, row: ContainerRow, verb: str) -> None:
        if row.status in KEPT:  # an expired one's files are gone wherever it was
            self.check_holder(row.holder, f"Container '{row.id}'", verb)

    def check_holder(self, holder: str | None, what: str, verb: str) -> None:
        """With replicas (PostgreSQL) a container, and a snapshot of it, lives on the replica that made
        it: another one cannot reach it and says so (``docs/replicas.md``). Rows from before replicas
        have no holder. With the fleet (``COVE_RAY_ADDRESS``) every replica reaches every container
        through its node's host, so the holder is not checked."""
        if self.db.is_sqlite or self.settings.ray_address or holder in (None, self.settings.replica):
            return
        raise SandboxUnavailable(f"{what} is held by replica '{holder}', not by this one "
                                 f"('{self.settings.replica}'), and cannot be {verb} here: send the request "
                                 "to that replica.", holder)

    async def check_here(self, project: str, container_id: str, verb: str) -> None:
        """A ``SandboxUnavailable`` unless this replica holds the container (or there is none: the
        caller's own lookup says so in its words)."""
        async with self.db.begin() as session:
            row = await session.scalar(select(ContainerRow).where(
                ContainerRow.id == container_id, ContainerRow.project == project))
        if row is not None:
            self._check_holder(row, verb)

    async def _wake(self, row: ContainerRow) -> None:
        """A stopped container counts as running again (its processes start on this use)."""
        now = int(time.time())

        def wake(connection: Connection) -> int:
            locks.hold_in(connection, "containers")
            self._room(connection).take(row.project, row.memory_limit, new_disk=False)
            return connection.execute(update(ContainerRow).where(
                ContainerRow.id == row.id, ContainerRow.status == "stopped").values(
                status="running", last_active_at=now)).rowcount

        if await self.db.run(wake):
            row.status, row.last_active_at = "running", now
            log.info("container %s started again", row.id)
        else:  # expired or deleted meanwhile: the caller's check says so
            row.status = (await self._row(row.project, row.id)).status

    def _touch(self, row: ContainerRow) -> None:
        """Records use for the expiry clock, in the background: with SQLite one tenant's long write
        (a response's 50,000 input items) holds the database, and a command must not wait for it.
        A container in use is never expired (``_busy``), so a late record costs nothing."""
        now = int(time.time())
        if now <= row.last_active_at:
            return
        row.last_active_at = now
        task = asyncio.create_task(self._record_use(row.id, now))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _record_use(self, container_id: str, now: int) -> None:
        try:
            async with self.db.begin() as session:
                await session.execute(update(ContainerRow).where(ContainerRow.id == container_id,
                                                                 ContainerRow.last_active_at < now)
                                      .values(last_active_at=now))
        except Exception:
            log.exception("could not record the use of container %s", container_id)

    async def pause(self, project: str, container_id: str) -> Container:
        """Freezes every process of the container (no CPU, memory kept) until ``resume`` or its next use."""
        return await self._set_paused(project, container_id, True)

    async def resume(self, project: str, container_id: str) -> Container:
        return await self._set_paused(project, container_id, False)

    async def _set_paused(self, project: str, container_id: str, paused: bool) -> Container:
        self.policies.check_containers(project)
        held = await self._live(project, container_id, "paused" if paused else "resumed")
        row = held.row
        sandbox = await self.engine.get(row.id, held.limits)
        await (sandbox.pause() if paused else sandbox.resume())
        row.status = "paused" if paused else "running"
        async with self.db.begin() as session:
            await session.execute(update(ContainerRow).where(ContainerRow.id == row.id, ContainerRow.status.in_(LIVE))
                                  .values(status=row.status))
        self._touch(row)
        return Container.from_row(row)

    async def exec(self, project: str, container_id: str, commands: list[Command],
                   on_output: Any | None = None, on_done: Any | None = None) -> list[CommandOutput]:
        """Runs ``commands`` in order.

        ``on_output(index, stream, text)`` receives output as it is produced and
        ``on_done(index, output)`` each command's result as it finishes.
        """
        if not commands or len(commands) > MAX_COMMANDS:
            raise InvalidRequest(f"commands must hold 1 to {MAX_COMMANDS} commands.", param="commands")
        if sum(len(c.command) for c in commands) > MAX_COMMAND_CHARS:
            raise InvalidRequest("commands are too long (1 MiB at most).", param="commands")
        results: list[CommandOutput] = []
        left, share = MAX_EXEC_OUTPUT, MAX_EXEC_OUTPUT // len(commands)
        async with self.use(project, container_id) as sandbox:
            for index, command in enumerate(commands):
                callback: OutputCallback | None = None
                if on_output is not None:
                    def callback(stream: Any, text: str, _index: int = index) -> asyncio.Future[None] | None:
                        held: asyncio.Future[None] | None = on_output(_index, stream, text)
                        return held
                limit = max(1, min(command.max_output_length, left - share * (len(commands) - index - 1)))
                results.append(await sandbox.exec(replace(command, max_output_length=limit), callback))
                left -= len(results[-1].stdout) + len(results[-1].stderr)
                if on_done is not None:
                    on_done(index, results[-1])
        return results

    def record_egress(self, decision: Decision, project: str) -> None:
        """The egress proxy's decisions go to the audit trail of their container (and to the metrics).

        ``project`` comes with the decision (the engine knows each container's), so a fleet node's
        decision is recorded by whichever replica collects it, holding the container or not; it is
        credited to a response only if one uses the container on this replica."""
        telemetry.egress_decided(decision.allowed)
        if self.audit is not None:
            using = self._responses.get(decision.client)
            self.audit.record(project, decision.client, "egress", {
                "method": decision.method, "host": decision.host, "port": decision.port,
                "allowed": decision.allowed, "reason": decision.reason, "address": decision.address},
                using[-1] if using else None)

    # -- expiry -------------------------------------------------------------------------------------
    def start_expiry(self) -> None:
        self._expiry.start()

    async def stop_expiry(self) -> None:
        """Stops the expiry clock; waits for uses being recorded and creates being admitted."""
        await self._expiry.stop()
        await asyncio.gather(*self._touches, return_exceptions=True)
        await self._admissions.close()

    async def _expire(self) -> bool:
        await self.expire_idle()
        return False

    async def expire_idle(self) -> list[str]:
        """Expires containers idle past their ``expires_after``: processes, mounts and disk go. With
        ``COVE_IDLE_ACTION=stop`` they are stopped instead (processes go, files stay) and expire once
        stopped for ``COVE_STOPPED_HOURS``."""
        now = int(time.time())
        kept = select(ContainerRow).where(ContainerRow.status.in_(KEPT))
        shared_fleet = not self.db.is_sqlite and bool(self.settings.ray_address)
        if not self.db.is_sqlite:
            # With replicas each expires the containers it holds; on a fleet, where any replica reaches
            # every container, also those of replicas that are gone. There a container in use on another
            # replica shows it in ``last_active_at``, which each replica refreshes here for its own.
            mine = [ContainerRow.holder == self.settings.replica, ContainerRow.holder.is_(None)]
            if shared_fleet:
                mine.append(ContainerRow.holder.not_in(select(ReplicaRow.id)))
            kept = kept.where(or_(*mine))
        async with self.db.begin() as session:
            if shared_fleet and self._busy:
                await session.execute(update(ContainerRow).where(ContainerRow.id.in_(list(self._busy)))
                                      .values(last_active_at=now))
            rows = list(await session.scalars(kept))
        idle = [row for row in rows if row.status in LIVE and row.id not in self._busy
                and row.last_active_at + row.expires_minutes * 60 <= now]
        if self.settings.idle_action == "stop":
            for row in idle:
                if row.id not in self._busy:  # a use that began since the query keeps it going
                    await self._stop(row.id)
            idle = [row for row in rows if row.status == "stopped" and row.last_active_at + row.expires_minutes * 60
                    + self.settings.stopped_hours * 3600 <= now]
        expired = []
        for row in idle:
            self._held.pop(row.id, None)
            async with self.db.begin() as session:
                # Only if nobody used or expired it since it was read (another replica may look at once).
                taken = await session.execute(update(ContainerRow).where(
                    ContainerRow.id == row.id, ContainerRow.status == row.status,
                    ContainerRow.last_active_at == row.last_active_at).values(status="expired"))
            if not taken.rowcount:  # type: ignore[attr-defined]
                continue
            await self.engine.destroy(row.id)
            expired.append(row.id)
            log.info("container %s expired", row.id)
        return expired


    async def _stop(self, container_id: str) -> None:
        self._held.pop(container_id, None)
        async with self.db.begin() as session:
            await session.execute(update(ContainerRow).where(ContainerRow.id == container_id,
                                                             ContainerRow.status.in_(LIVE)).values(status="stopped"))
        await self.engine.stop(container_id)
        log.info("container %s stopped (idle)", container_id)


@dataclass
class _Held:
    row: ContainerRow
    limits: Limits


class AuditedSandbox(Sandbox):
    """A sandbox whose commands are written to the audit trail."""

    def __init__(self, inner: Sandbox, audit: AuditLog, project: str, container_id: str,
                 response_id: str | None) -> None:
        self.id = container_id
        self._inner = inner
        self._audit = audit
        self._project = project
        self._response_id = response_id

    async def exec(self, command: Command, on_output: OutputCallback | None = None) -> CommandOutput:
        started = time.monotonic()
        result = await self._inner.exec(command, on_output)
        seconds = time.monotonic() - started
        telemetry.exec_done(seconds, result.outcome.type)
        self._audit.record(self._project, self.id, "command", {
            "command": command.command, "workdir": command.workdir, "outcome": result.outcome.model_dump(),
            "duration_ms": round(seconds * 1000, 1)}, self._response_id)
        return result

    async def files(self) -> Files:
        return await self._inner.files()

    async def connect_port(self, port: int) -> socket.socket:
        return await self._inner.connect_port(port)

    async def terminal(self, request: TerminalRequest) -> Terminal:
        """The inner terminal as it is: a terminal's session is audited when it ends, by
        ``service/terminals.py``, which alone knows how it ended and what crossed it."""
        return await self._inner.terminal(request)

    async def channel(self, argv: list[str]) -> Channel:
        return await self._inner.channel(argv)

    async def display(self, screen: Screen | None = None) -> Display:
        display = await self._inner.display(screen)
        return AuditedDisplay(display, lambda data: self._audit.record(self._project, self.id, "computer", data,
                                                                       self._response_id))

    @property
    def has_display(self) -> bool:
        return self._inner.has_display

    async def stop(self) -> None:
        await self._inner.stop()

    @property
    def running(self) -> bool:
        return self._inner.running

    async def pause(self) -> None:
        await self._inner.pause()

    async def resume(self) -> None:
        await self._inner.resume()

    @property
    def paused(self) -> bool:
        return self._inner.paused

    async def add_skill(self, name: str, files: Iterable[SkillFile]) -> str:
        listed = list(files)
        path = await self._inner.add_skill(name, listed)
        self._audit.record(self._project, self.id, "skill", {
            "name": name, "path": path, "files": len(listed), "bytes": sum(len(file.data) for file in listed)},
            self._response_id)
        return path


class AuditedDisplay(Display):
    """A display whose action batches are written to the audit trail, whoever sends them (a
    response's computer tool, ``POST /v1/containers/{id}/computer``), however they end: the actions
    as given (typed text and keys kept, as commands are kept; a long drag path cut to its ends), the
    duration and the outcome. Screenshots change nothing and are not recorded."""

    def __init__(self, inner: Display, record: Callable[[dict[str, Any]], None]) -> None:
        self.screen = inner.screen
        self._inner = inner
        self._record = record

    async def act(self, actions: list[dict[str, Any]]) -> bytes:
        started = time.monotonic()
        outcome: dict[str, Any] = {"type": "completed"}
        try:
            return await self._inner.act(actions)
        except BaseException as exc:
            outcome = _failure(exc)
            raise
        finally:
            self._record({"actions": [_audited_action(action) for action in actions], "outcome": outcome,
                          "duration_ms": round((time.monotonic() - started) * 1000, 1)})

    async def screenshot(self) -> bytes:
        return await self._inner.screenshot()

    async def vnc(self) -> Channel:
        return await self._inner.vnc()


AUDITED_PATH_POINTS = 2
"""Points of a drag path the audit trail keeps (its ends; ``points`` says how many it had): a path may
hold a thousand, and the row would be mostly coordinates nobody reads."""


def _audited_action(action: Any) -> Any:
    if not isinstance(action, dict) or action.get("type") != "drag" or not isinstance(action.get("path"), list):
        return action
    path = action["path"]
    if len(path) <= AUDITED_PATH_POINTS:
        return action
    return {**action, "path": [path[0], path[-1]], "points": len(path)}


def _failure(exc: BaseException) -> dict[str, Any]:
    """How an action batch ended when it did not complete: refused before anything ran (a key the
    display does not know), failed on the way (the display stopped answering), or cut off."""
    if isinstance(exc, InvalidRequest):
        return {"type": "refused", "message": exc.message}
    if isinstance(exc, CoveError):
        return {"type": "failed", "message": exc.message}
    if isinstance(exc, asyncio.CancelledError):
        return {"type": "cancelled", "message": "The request ended before the actions did."}
    return {"type": "failed", "message": "The server had an error."}


def policy_object(egress: EgressPolicy | None) -> dict[str, Any]:
    """What the API shows (secrets are never echoed)."""
    if egress is None:
        return {"type": "disabled"}
    return {"type": "allowlist", "allowed_domains": list(egress.allowed_domains)}
