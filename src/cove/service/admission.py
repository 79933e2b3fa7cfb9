"""Admitting containers in groups: the quota checks and row inserts of every create waiting, in one
transaction under the ``containers`` lock row (``service/locks.py``).

Why: a create must check its project's quotas and insert its row as one step, or two concurrent
creates both see room for one more. With one transaction per create, 100 creates at once queue on
that lock: on SQLite a waiter sleeps in the busy handler (1, 2, 5 ... 100 ms steps) and every
holder's five round trips stretch while the event loop serves the other requests. Measured with 100
parallel creates through the API: a create waited 116 ms (p50) and up to 1.9 s for the lock, and the
burst took 2.1-2.4 s where the engine alone starts the 100 in 0.7-0.9 s.

One admitter task instead takes every create waiting, reads each project's usage once, decides the
creates in arrival order exactly as if they had come one after another (each admitted one counts
against the next), inserts the admitted rows and commits once. A refused create gets its quota
error; if the commit fails (a name the store cannot hold), each create of the group is decided again
on its own, so the error reaches only the request it belongs to.

The transaction is synchronous code run by ``Database.run``: on SQLite one hand-over to the store's
writer thread for the whole of it, where through aiosqlite its five statements (lock, usage, live
count, insert, commit) were five round trips of 0.5-0.7 ms each through a thread and the event loop,
the larger part of a pooled create. Its statements are Core ones on the connection: through the ORM
session the same lock and reads cost 1.0 ms in place of 0.6 (SQLite's own part is under 0.2). They are
built once, at import (see below).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, bindparam, delete, func, insert, select

from cove.config import Settings, parse_size
from cove.errors import TooManyRequests
from cove.service import locks
from cove.service.projects import Quotas
from cove.store.db import Database
from cove.store.models import ContainerFileRow, ContainerRow, SnapshotRow, columns
from cove.store.writer import settle

log = logging.getLogger(__name__)

LIVE = ("running", "paused")
"""Statuses of containers that hold their processes (and count against quotas)."""
KEPT = (*LIVE, "stopped")
"""Statuses of containers that keep their files: ``stopped`` ones (idle, ``COVE_IDLE_ACTION=stop``)
start again on their next use, and their disks count against the ``disk`` quota."""
MAX_GROUP = 500
"""Creates one transaction decides at most (more wait for the next): bounds how long it holds the lock."""


def check_disk(quotas: Quotas, disk_limit: str, disks: int, snapshot_bytes: int) -> None:
    """The project's ``disk`` quota: ``disks`` containers' disks (stopped ones too) and its snapshots."""
    each = parse_size(disk_limit)
    if disks * each + snapshot_bytes > quotas.disk:
        raise quotas.exceeded("disk", f"this project's containers ({_gib(each)} each, stopped ones too) and "
                                      f"snapshots may have {_gib(quotas.disk)} of disk")


# The statements of an admission are built once, with the project and the server's cap bound when they
# run: building a statement and its cache key costs more than SQLite takes to run it (``service/locks.py``).
_CONTAINERS, _SNAPSHOTS = ContainerRow.__table__.c, SnapshotRow.__table__.c
SNAPSHOT_BYTES = select(func.coalesce(func.sum(_SNAPSHOTS.bytes), 0)).where(_SNAPSHOTS.project == bindparam("project"))
"""What the ``project``'s snapshots hold, for its ``disk`` quota."""
_LIVE_COUNT = select(func.count()).select_from(
    select(_CONTAINERS.seq).where(_CONTAINERS.status.in_(LIVE)).limit(bindparam("cap")).subquery()).scalar_subquery()
"""Live containers on the server, counted up to its cap (no further: enough to refuse)."""
_TOTALS = {False: (SNAPSHOT_BYTES.scalar_subquery(),), True: (SNAPSHOT_BYTES.scalar_subquery(), _LIVE_COUNT)}
"""The totals a project's read carries, by whether it also counts the live containers."""
_USAGE = {count_live: select(_CONTAINERS.status, _CONTAINERS.memory_limit, *totals)
          .where(_CONTAINERS.project == bindparam("project"), _CONTAINERS.status.in_(KEPT))
          for count_live, totals in _TOTALS.items()}
"""A project's containers that keep their files, each row carrying the totals."""
_NO_ROWS = {count_live: select(*totals) for count_live, totals in _TOTALS.items()}
"""The totals alone, for a project with no such container."""
_INSERT_CONTAINERS, _INSERT_FILES = insert(ContainerRow), insert(ContainerFileRow)


@dataclass
class _Usage:
    """One project's containers as its quotas count them."""

    running: list[str]
    """The memory limits of its live containers."""
    disks: int
    snapshot_bytes: int


class Room:
    """The quotas' view of the store within one transaction: each project's usage read once, the
    server's live containers counted once, then both counted forward as containers are taken. Final
    only in a transaction holding the ``containers`` lock."""

    def __init__(self, connection: Connection, quotas: Callable[[str], Quotas], settings: Settings) -> None:
        self._connection = connection
        self._quotas = quotas
        self._settings = settings
        self._usage: dict[str, _Usage] = {}
        self._live: int | None = None

    def take(self, project: str, memory_limit: str, *, new_disk: bool = True) -> None:
        """Counts one more running container of ``project`` (a stopped one starting again has its disk
        already: ``new_disk`` False), or raises the error of the first quota, then the server's cap,
        it would exceed."""
        quotas = self._quotas(project)
        usage = self._read(project)
        if len(usage.running) + 1 > quotas.running_containers:
            raise quotas.exceeded("running_containers",
                                  f"this project may run {quotas.running_containers} containers at once")
        if sum(map(parse_size, [*usage.running, memory_limit])) > quotas.memory:
            raise quotas.exceeded("memory", "the memory_limit of this project's running containers may add "
                                            f"up to {_gib(quotas.memory)}")
        check_disk(quotas, self._settings.disk_limit, usage.disks + new_disk, usage.snapshot_bytes)
        live = self._live
        assert live is not None  # counted by the first read
        if live + 1 > self._settings.max_containers:
            raise TooManyRequests(f"This server runs at most {self._settings.max_containers} containers.")
        usage.running.append(memory_limit)
        usage.disks += new_disk
        self._live = live + 1

    def _read(self, project: str) -> _Usage:
        """The project's usage; the first read also counts the server's live containers (later ones
        leave that count out). The snapshots' bytes and that count ride along on each of the project's
        rows: one statement, not three (two when the project has no container)."""
        if project not in self._usage:
            count_live = self._live is None
            values = {"project": project, "cap": self._settings.max_containers}
            kept = self._connection.execute(_USAGE[count_live], values).all()
            read = kept[0][2:] if kept else self._connection.execute(_NO_ROWS[count_live], values).one()
            self._usage[project] = _Usage(running=[row[1] for row in kept if row[0] in LIVE], disks=len(kept),
                                          snapshot_bytes=int(read[0]))
            if count_live:
                self._live = int(read[1])
        return self._usage[project]


@dataclass(eq=False)
class _Create:
    row: ContainerRow
    files: list[ContainerFileRow]
    decided: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Admissions:
    """Decides creates in groups (see the module's docstring); ``room`` gives the quotas' view within a
    transaction."""

    def __init__(self, db: Database, room: Callable[[Connection], Room]) -> None:
        self._db = db
        self._room = room
        self._waiting: list[_Create] = []
        self._task: asyncio.Task[None] | None = None

    async def admit(self, row: ContainerRow, files: list[ContainerFileRow]) -> None:
        """Returns once ``row`` (and its ``files``, which refer to it) is committed, or raises the quota
        error that refuses it or what committing it alone raised. If the caller is cancelled once its
        group has started, the row, committed, is deleted again."""
        create = _Create(row, files)
        self._waiting.append(create)
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        await create.decided

    async def close(self) -> None:
        """Waits for the creates already handed in to be decided."""
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        group: list[_Create] = []
        try:
            while self._waiting:
                group = [create for create in self._waiting[:MAX_GROUP] if not create.decided.done()]
                del self._waiting[:MAX_GROUP]
                await self._decide(group)
        finally:
            self._task = None
            stopped = RuntimeError("the server stopped before this container was admitted")
            for create in [*group, *self._waiting]:  # only if the task itself was stopped (at shutdown)
                settle(create.decided, stopped)
            self._waiting.clear()

    async def _decide(self, group: list[_Create]) -> None:
        if not group:
            return
        try:
            refused = await self._db.run(functools.partial(self._commit, group))
        except Exception as exc:
            if len(group) == 1:
                settle(group[0].decided, exc)
                return
            for create in group:  # one at a time, so an error reaches only its own request
                await self._decide([create])
            return
        for create in group:
            settle(create.decided, refused.get(create))
        abandoned = [create.row.id for create in group if create.decided.cancelled() and create not in refused]
        if abandoned:
            try:
                async with self._db.begin() as session:
                    await session.execute(delete(ContainerRow).where(ContainerRow.id.in_(abandoned)))
            except Exception:  # logged: the groups after this one must still be decided
                log.exception("could not delete the rows of abandoned creates %s", abandoned)

    def _commit(self, group: list[_Create], connection: Connection) -> dict[_Create, TooManyRequests]:
        """Inserts the rows of the creates that fit (``Database.run`` commits them); returns the others' errors."""
        refused: dict[_Create, TooManyRequests] = {}
        locks.hold_in(connection, "containers")
        room = self._room(connection)
        admitted = []
        for create in group:
            try:
                room.take(create.row.project, create.row.memory_limit)
            except TooManyRequests as exc:
                refused[create] = exc
            else:
                admitted.append(create)
        if admitted:
            connection.execute(_INSERT_CONTAINERS, [columns(create.row) for create in admitted])
        files = [columns(file) for create in admitted for file in create.files]
        if files:  # after the containers' rows they refer to
            connection.execute(_INSERT_FILES, files)
        return refused


def _gib(size: int) -> str:
    return f"{size / (1 << 30):g} GiB"
