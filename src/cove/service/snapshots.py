"""Snapshots and forks of containers, and the snapshots that make responses branch.

A snapshot is a container's disk as it was at one moment, copied by reference (``disk_pool.py``):
O(1) in what the container wrote. It outlives the container until deleted and counts against the
project's ``disk`` quota. A fork is a snapshot that is not kept, each child a container made from it.
Running processes are never copied: a fork or a container from a snapshot starts fresh on those files.

Branching responses: at the end of a stored response that used a container, Cove snapshots it and
notes how far responses' use of the container had got (``ContainerService.generation``). A
continuation of that response keeps the container if no other response has used it since;
otherwise (another branch moved it on, or it is gone) it gets a new container made from the snapshot,
so every branch sees the files as its previous response left them and nothing another branch did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cove.config import Settings
from cove.errors import CoveError, InvalidRequest, NotFound
from cove.ids import new_id
from cove.sandbox.base import SandboxEngine
from cove.service import locks
from cove.service.admission import KEPT
from cove.service.audit import AuditLog
from cove.service.containers import ContainerService
from cove.service.objects import Container, ListPage, Snapshot
from cove.service.pagination import Page, paginate
from cove.service.sweeper import Sweeper
from cove.store.db import Database
from cove.store.models import ContainerFileRow, ContainerRow, SnapshotRow

log = logging.getLogger(__name__)
MAX_FORKS = 100
_PRUNE_BATCH = 200


class SnapshotService:
    def __init__(self, db: Database, engine: SandboxEngine, containers: ContainerService, settings: Settings,
                 audit: AuditLog | None = None) -> None:
        self.db = db
        self.engine = engine
        self.containers = containers
        self.settings = settings
        self.audit = audit
        self._expiry = Sweeper("response snapshot expiry", self.prune_responses, settings.expiry_check_seconds)

    # -- snapshots the API makes ----------------------------------------------------------------------
    async def create(self, project: str, container_id: str, name: str | None) -> Snapshot:
        self.containers.policies.check_containers(project)
        row, _ = await self.containers.held(project, container_id, "snapshotted")
        snapshot = await self._take(project, row, name=name)
        return Snapshot.from_row(snapshot)

    async def _take(self, project: str, container: ContainerRow, *, name: str | None = None,
                    response_id: str | None = None, generation: str | None = None) -> SnapshotRow:
        snapshot_id = new_id("snap")
        size = await self.engine.snapshot(container.id, snapshot_id)
        row = SnapshotRow(id=snapshot_id, project=project, container_id=container.id, name=name,
                          image=container.image, bytes=size, files=await self._file_records(container.id),
                          response_id=response_id, generation=generation, created_at=int(time.time()),
                          holder=self.settings.replica)
        try:
            async with self.db.begin() as session:
                await locks.hold(session, "containers")
                if response_id is None:  # a response's own snapshot is Cove's, not the client's to count
                    await self.containers.check_snapshot_room(session, project, size)
                session.add(row)
        except BaseException:
            await self.engine.delete_snapshot(snapshot_id)
            raise
        if self.audit is not None and response_id is None:  # a response's own is Cove's bookkeeping
            self.audit.record(project, container.id, "snapshot", {"snapshot_id": snapshot_id, "bytes": size})
        return row

    async def _file_records(self, container_id: str) -> list[dict[str, Any]]:
        async with self.db.begin() as session:
            rows = await session.scalars(select(ContainerFileRow).where(ContainerFileRow.container_id == container_id)
                                         .order_by(ContainerFileRow.seq))
            return [{"path": r.path, "bytes": r.bytes, "source": r.source, "created_at": r.created_at} for r in rows]

    async def get(self, project: str, snapshot_id: str, container_id: str | None = None) -> Snapshot:
        return Snapshot.from_row(await self.row(project, snapshot_id, container_id))

    async def row(self, project: str, snapshot_id: str, container_id: str | None = None,
                  param: str = "snapshot_id") -> SnapshotRow:
        query = select(SnapshotRow).where(SnapshotRow.id == snapshot_id, SnapshotRow.project == project,
                                          SnapshotRow.response_id.is_(None))
        if container_id is not None:
            query = query.where(SnapshotRow.container_id == container_id)
        async with self.db.begin() as session:
            row = await session.scalar(query)
        if row is None:
            raise NotFound(f"No snapshot found with id '{snapshot_id}'.", param=param, code="snapshot_not_found")
        return row

    async def list_page(self, project: str, page: Page, container_id: str | None = None) -> ListPage[Snapshot]:
        query = select(SnapshotRow).where(SnapshotRow.project == project, SnapshotRow.response_id.is_(None))
        async with self.db.begin() as session:
            if container_id is not None:
                query = query.where(SnapshotRow.container_id == container_id)
                await self._check_container(session, project, container_id)
            rows, has_more = await paginate(session, query, SnapshotRow, page)
        return ListPage.of([Snapshot.from_row(row) for row in rows], has_more)

    @staticmethod
    async def _check_container(session: AsyncSession, project: str, container_id: str) -> None:
        """A 404 for a container the project never had (one it deleted may still have snapshots)."""
        known = await session.scalar(select(ContainerRow.id).where(
            ContainerRow.id == container_id, ContainerRow.project == project)) or await session.scalar(
            select(SnapshotRow.id).where(SnapshotRow.container_id == container_id, SnapshotRow.project == project)
            .limit(1))
        if known is None:
            raise NotFound(f"No container found with id '{container_id}'.", param="container_id",
                           code="container_not_found")

    async def delete(self, project: str, snapshot_id: str, container_id: str | None = None) -> None:
        row = await self.row(project, snapshot_id, container_id)
        self.containers.check_holder(row.holder, f"Snapshot '{row.id}'", "deleted")
        await self._drop(row.id)

    async def _drop(self, snapshot_id: str) -> None:
        async with self.db.begin() as session:
            await session.execute(delete(SnapshotRow).where(SnapshotRow.id == snapshot_id))
        await self.engine.delete_snapshot(snapshot_id)

    # -- forks ----------------------------------------------------------------------------------------
    async def fork(self, project: str, container_id: str, count: int) -> list[Container]:
        """``count`` new containers, each with the container's files as they are now (not its processes),
        its image, limits, network policy and secrets (sealed again for each), its name and expiry."""
        if not 1 <= count <= MAX_FORKS:
            raise InvalidRequest(f"count must be between 1 and {MAX_FORKS}.", param="count")
        self.containers.policies.check_containers(project)
        parent, limits = await self.containers.held(project, container_id, "forked")
        snapshot_id = new_id("snap")
        await self.engine.snapshot(parent.id, snapshot_id)
        try:
            source = SnapshotRow(id=snapshot_id, project=project, container_id=parent.id, image=parent.image,
                                 bytes=0, files=await self._file_records(parent.id))
            made = await asyncio.gather(*(self.containers.create_checked(
                project, name=parent.name, image=parent.image, memory_limit=parent.memory_limit,
                cpus=parent.cpu_limit, minutes=parent.expires_minutes, egress=limits.network, snapshot=source)
                for _ in range(count)), return_exceptions=True)
        finally:
            await self.engine.delete_snapshot(snapshot_id)
        children = [child for child in made if isinstance(child, Container)]
        failure = next((child for child in made if isinstance(child, BaseException)), None)
        if failure is not None:  # all or nothing: a client never has to find half a fork
            for child in children:
                await self.containers.delete(project, child.id)
            raise failure
        if self.audit is not None:
            self.audit.record(project, parent.id, "fork", {"containers": [child.id for child in children]})
        return children

    # -- branching responses --------------------------------------------------------------------------
    async def mark_response(self, project: str, container_id: str, response_id: str) -> None:
        """The snapshot a continuation of ``response_id`` branches from: the container as it is now."""
        try:
            row, _ = await self.containers.held(project, container_id, "snapshotted")
            await self._take(project, row, response_id=response_id,
                             generation=self.containers.generation(container_id))
        except CoveError as exc:  # deleted or expired meanwhile: a continuation then finds it so
            log.info("no snapshot of container %s at the end of response %s: %s", container_id, response_id,
                     exc.message)
        except Exception:  # the response has its result; a continuation then uses the container as it is
            log.exception("could not snapshot container %s at the end of response %s", container_id, response_id)

    async def branch(self, project: str, container_id: str, snapshot: SnapshotRow) -> str:
        """The container a continuation from ``snapshot`` (a response's) uses: the same one if it is
        still as that response left it, else a new one made from the snapshot."""
        async with self.db.begin() as session:
            container = await session.scalar(select(ContainerRow).where(
                ContainerRow.id == container_id, ContainerRow.project == project))
        if container is not None and container.status in KEPT and snapshot.generation is not None \
                and self.containers.claim(container_id, snapshot.generation):
            return container_id
        if container is None:
            raise NotFound(f"Container '{container_id}' of the previous response no longer exists.",
                           param="previous_response_id", code="container_not_found")
        held = await self.containers.held(project, container_id, "branched") if container.status in KEPT else None
        egress = held[1].network if held is not None else self.containers.secrets.container_egress(container)
        child = await self.containers.create_checked(
            project, name=container.name, image=snapshot.image, memory_limit=container.memory_limit,
            cpus=container.cpu_limit, minutes=container.expires_minutes, egress=egress, snapshot=snapshot)
        if self.audit is not None:
            self.audit.record(project, container_id, "fork", {"containers": [child.id],
                                                              "snapshot_id": snapshot.id})
        return child.id

    async def response_snapshot(self, session: AsyncSession, project: str, response_ids: list[str],
                                container_id: str) -> SnapshotRow | None:
        """The latest of ``response_ids``' snapshots of ``container_id`` (they are a chain, newest first)."""
        rows = {row.response_id: row for row in await session.scalars(select(SnapshotRow).where(
            SnapshotRow.project == project, SnapshotRow.container_id == container_id,
            SnapshotRow.response_id.in_(response_ids)))}
        return next((rows[rid] for rid in response_ids if rid in rows), None)

    def start_expiry(self) -> None:
        self._expiry.start()

    async def stop_expiry(self) -> None:
        await self._expiry.stop()

    async def prune_responses(self) -> bool:
        """Drops a batch of response snapshots older than ``COVE_RESPONSE_SNAPSHOT_HOURS`` (a
        continuation of such a response then uses its container as it is); True if there may be more."""
        cutoff = int(time.time() - self.settings.response_snapshot_hours * 3600)
        async with self.db.begin() as session:
            old = select(SnapshotRow.id).where(SnapshotRow.response_id.is_not(None), SnapshotRow.created_at <= cutoff)
            if not self.db.is_sqlite:  # with replicas each prunes the snapshots on its own disk
                old = old.where(or_(SnapshotRow.holder == self.settings.replica, SnapshotRow.holder.is_(None)))
            ids = list(await session.scalars(old.order_by(SnapshotRow.seq).limit(_PRUNE_BATCH)))
        for snapshot_id in ids:
            await self._drop(snapshot_id)
        return len(ids) == _PRUNE_BATCH

    async def forget_response(self, response_id: str) -> None:
        """A deleted response's snapshot goes with it."""
        async with self.db.begin() as session:
            ids = list(await session.scalars(select(SnapshotRow.id).where(SnapshotRow.response_id == response_id)))
        for snapshot_id in ids:
            await self._drop(snapshot_id)
