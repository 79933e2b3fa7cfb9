"""The fleet's registry in the database: the ``Placement`` the fleet engine places containers through.

Placement is one short transaction: the candidate nodes' rows are locked (``SELECT ... FOR UPDATE``, in
node order so that two replicas placing at once queue rather than deadlock), ``choose`` picks from the
usage counters on those rows, and the choice is inserted and counted before the locks go. So replicas
sharing one PostgreSQL never both take a node's last slot; on SQLite (one server) the write lock does the
same. The counters move with every placement, forget and loss, so placing never sums the placements.

A node's containers become ``lost`` (here and in ``containers.status``, which turns their later use into
410) when the node stops answering or comes back under a new incarnation. Snapshots are files on the node
that took them (``fleet_snapshots``): they outlive a restart of its host, and are lost only with the node.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cove.sandbox.fleet.placement import Assignment, KeptSnapshot, Need, NodeReport, Usage, choose
from cove.store.db import Database
from cove.store.models import ContainerRow, FleetNodeRow, FleetPlacementRow, FleetSnapshotRow


@dataclass(frozen=True)
class NodeStatus:
    """One node for ``cove fleet status``."""

    node: str
    alive: bool
    incarnation: str
    memory: int
    cpus: float
    slots: int
    images: list[str]
    seen_at: int
    containers: int
    lost: int
    memory_used: int
    cpus_used: float


_PLACE_ATTEMPTS = 20
"""Choices made again when another placer took the room first (SQLite only: PostgreSQL's row locks queue
placers instead)."""


class FleetRegistry:
    """``cove.sandbox.fleet.placement.Placement`` over the store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def place(self, container_id: str, need: Need, candidates: Sequence[NodeReport]) -> Assignment | None:
        reports = {report.node: report for report in candidates}
        for _ in range(_PLACE_ATTEMPTS):
            async with self.db.begin() as session:
                rows = {row.node: row for row in await session.scalars(
                    select(FleetNodeRow).where(FleetNodeRow.node.in_(reports), FleetNodeRow.alive)
                    .order_by(FleetNodeRow.node).with_for_update())}
                # The row's incarnation must be the report's: another replica may have seen the node restart.
                chosen = choose(need, [(reports[node], _usage(row)) for node, row in rows.items()
                                       if row.incarnation == reports[node].incarnation])
                if chosen is None:
                    return None
                # Counted only if the node still has room: SQLite takes no row locks, so another placer may
                # have filled it since the read (then the choice is made again).
                counted = await session.execute(
                    update(FleetNodeRow).where(
                        FleetNodeRow.node == chosen.node, FleetNodeRow.incarnation == chosen.incarnation,
                        FleetNodeRow.used_slots < FleetNodeRow.slots,
                        FleetNodeRow.used_memory + need.memory <= FleetNodeRow.memory)
                    .values(used_memory=FleetNodeRow.used_memory + need.memory,
                            used_cpus=FleetNodeRow.used_cpus + need.cpus, used_slots=FleetNodeRow.used_slots + 1)
                    .execution_options(synchronize_session=False))
                if counted.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                session.add(FleetPlacementRow(container_id=container_id, node=chosen.node,
                                              incarnation=chosen.incarnation, memory=need.memory, cpus=need.cpus,
                                              state="placed", placed_at=int(time.time())))
                return Assignment(chosen.node, chosen.incarnation)
        return None

    async def assignment(self, container_id: str) -> Assignment | None:
        async with self.db.begin() as session:
            row = await session.get(FleetPlacementRow, container_id)
        if row is None:
            return None
        return Assignment(row.node, row.incarnation, "lost" if row.state == "lost" else "placed")

    async def forget(self, container_id: str) -> None:
        async with self.db.begin() as session:
            row = await session.get(FleetPlacementRow, container_id)
            if row is None:
                return
            if row.state == "placed":
                await session.execute(update(FleetNodeRow).where(FleetNodeRow.node == row.node).values(
                    used_memory=FleetNodeRow.used_memory - row.memory, used_cpus=FleetNodeRow.used_cpus - row.cpus,
                    used_slots=FleetNodeRow.used_slots - 1))
            await session.delete(row)

    async def seen(self, reports: Sequence[NodeReport]) -> int:
        try:
            return await self._seen(reports)
        except IntegrityError:
            # Replicas starting together both insert a node they see for the first time (a row that does
            # not exist yet cannot be locked); the loser's retry finds the winner's row and locks it.
            return await self._seen(reports)

    async def _seen(self, reports: Sequence[NodeReport]) -> int:
        lost = 0
        now = int(time.time())
        async with self.db.begin() as session:
            known = {row.node: row for row in await session.scalars(
                select(FleetNodeRow).where(FleetNodeRow.node.in_([r.node for r in reports]))
                .order_by(FleetNodeRow.node).with_for_update())}
            for report in reports:
                row = known.get(report.node)
                if row is None:
                    row = FleetNodeRow(node=report.node, used_memory=0, used_cpus=0.0, used_slots=0)
                    session.add(row)
                elif row.incarnation != report.incarnation:  # it restarted: what it held is gone
                    lost += await _mark_lost(session, report.node, FleetPlacementRow.incarnation != report.incarnation)
                    row.used_memory, row.used_cpus, row.used_slots = 0, 0.0, 0
                row.incarnation, row.memory, row.cpus, row.slots = (report.incarnation, report.memory, report.cpus,
                                                                    report.slots)
                row.images, row.alive, row.seen_at = sorted(report.images), True, now
        return lost

    async def lose(self, node: str) -> int:
        async with self.db.begin() as session:
            await session.execute(update(FleetNodeRow).where(FleetNodeRow.node == node).values(
                alive=False, used_memory=0, used_cpus=0.0, used_slots=0))
            await session.execute(update(FleetSnapshotRow).where(FleetSnapshotRow.node == node).values(state="lost"))
            return await _mark_lost(session, node, None)

    async def keep_snapshot(self, snapshot_id: str, node: str) -> None:
        async with self.db.begin() as session:
            session.add(FleetSnapshotRow(snapshot_id=snapshot_id, node=node, state="kept", taken_at=int(time.time())))

    async def snapshot(self, snapshot_id: str) -> KeptSnapshot | None:
        async with self.db.begin() as session:
            row = await session.get(FleetSnapshotRow, snapshot_id)
        return None if row is None else KeptSnapshot(row.node, row.state == "lost")

    async def forget_snapshot(self, snapshot_id: str) -> None:
        async with self.db.begin() as session:
            await session.execute(delete(FleetSnapshotRow).where(FleetSnapshotRow.snapshot_id == snapshot_id))

    async def usage(self) -> dict[str, Usage]:
        async with self.db.begin() as session:
            return {row.node: _usage(row) for row in await session.scalars(select(FleetNodeRow))}

    async def status(self) -> list[NodeStatus]:
        """Every node the fleet has seen, by name, with what is placed there (``cove fleet status``)."""
        async with self.db.begin() as session:
            rows = list(await session.scalars(select(FleetNodeRow).order_by(FleetNodeRow.node)))
            lost: dict[str, int] = dict((await session.execute(
                select(FleetPlacementRow.node, func.count()).where(FleetPlacementRow.state == "lost")
                .group_by(FleetPlacementRow.node))).all())
        return [NodeStatus(row.node, row.alive, row.incarnation, row.memory, row.cpus, row.slots, row.images,
                           row.seen_at, row.used_slots, lost.get(row.node, 0), row.used_memory, row.used_cpus)
                for row in rows]


def _usage(row: FleetNodeRow) -> Usage:
    return Usage(row.used_memory, row.used_cpus, row.used_slots)


async def _mark_lost(session: AsyncSession, node: str, which: ColumnElement[bool] | None) -> int:
    """The node's placed containers (those matching ``which``, else all) become lost, with their rows."""
    condition = [FleetPlacementRow.node == node, FleetPlacementRow.state == "placed"]
    if which is not None:
        condition.append(which)
    ids = list(await session.scalars(select(FleetPlacementRow.container_id).where(*condition)))
    if ids:
        await session.execute(update(FleetPlacementRow).where(FleetPlacementRow.container_id.in_(ids))
                              .values(state="lost"))
        await session.execute(update(ContainerRow).where(ContainerRow.id.in_(ids)).values(status="lost"))
    return len(ids)
