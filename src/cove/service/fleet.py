"""The fleet's registry in the database: the ``Placement`` the fleet engine places containers through.

Placement is one transaction: the candidate nodes' rows are locked (``SELECT ... FOR UPDATE``, in node
order so that two replicas placing at once queue rather than deadlock), what is placed on them is summed,
``choose`` picks, and the choice is inserted before the locks go. So replicas sharing one PostgreSQL never
both take a node's last slot. On SQLite (one server) the write lock does the same.

A node's containers become ``lost`` (here and in ``containers.status``, which turns their later use into
410) when the node stops answering or comes back under a new incarnation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cove.sandbox.fleet.placement import Assignment, Need, NodeReport, Usage, choose
from cove.store.db import Database
from cove.store.models import ContainerRow, FleetNodeRow, FleetPlacementRow


class FleetRegistry:
    """``cove.sandbox.fleet.placement.Placement`` over the store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def place(self, container_id: str, need: Need, candidates: Sequence[NodeReport]) -> Assignment | None:
        if not candidates:
            return None
        reports = {report.node: report for report in candidates}
        async with self.db.begin() as session:
            rows = await session.scalars(select(FleetNodeRow).where(FleetNodeRow.node.in_(reports),
                                                                    FleetNodeRow.alive)
                                         .order_by(FleetNodeRow.node).with_for_update())
            # The row's incarnation, not the caller's report: another replica may have seen a restart.
            current = {row.node: reports[row.node] for row in rows if row.incarnation == reports[row.node].incarnation}
            used = await _usage(session, list(current))
            chosen = choose(need, [(report, used.get(node, Usage())) for node, report in current.items()])
            if chosen is None:
                return None
            session.add(FleetPlacementRow(container_id=container_id, node=chosen.node, incarnation=chosen.incarnation,
                                          memory=need.memory, cpus=need.cpus, state="placed",
                                          placed_at=int(time.time())))
        return Assignment(chosen.node, chosen.incarnation)

    async def assignment(self, container_id: str) -> Assignment | None:
        async with self.db.begin() as session:
            row = await session.get(FleetPlacementRow, container_id)
        if row is None:
            return None
        return Assignment(row.node, row.incarnation, "lost" if row.state == "lost" else "placed")

    async def forget(self, container_id: str) -> None:
        async with self.db.begin() as session:
            row = await session.get(FleetPlacementRow, container_id)
            if row is not None:
                await session.delete(row)

    async def seen(self, reports: Sequence[NodeReport]) -> int:
        lost = 0
        now = int(time.time())
        insert = sqlite_insert if self.db.is_sqlite else pg_insert
        async with self.db.begin() as session:
            for report in sorted(reports, key=lambda r: r.node):
                values = {"incarnation": report.incarnation, "memory": report.memory, "cpus": report.cpus,
                          "slots": report.slots, "images": sorted(report.images), "alive": True, "seen_at": now}
                await session.execute(insert(FleetNodeRow).values(node=report.node, **values)
                                      .on_conflict_do_update(index_elements=["node"], set_=values))
                lost += await _mark_lost(session, report.node, FleetPlacementRow.incarnation != report.incarnation)
        return lost

    async def lose(self, node: str) -> int:
        async with self.db.begin() as session:
            await session.execute(update(FleetNodeRow).where(FleetNodeRow.node == node).values(alive=False))
            return await _mark_lost(session, node, None)

    async def usage(self) -> dict[str, Usage]:
        async with self.db.begin() as session:
            return await _usage(session, None)

    async def status(self) -> list[NodeStatus]:
        """Every node the fleet has seen, by name, with what is placed there (``cove fleet status``)."""
        async with self.db.begin() as session:
            rows = list(await session.scalars(select(FleetNodeRow).order_by(FleetNodeRow.node)))
            used = await _usage(session, None)
            lost = dict((await session.execute(
                select(FleetPlacementRow.node, func.count()).where(FleetPlacementRow.state == "lost")
                .group_by(FleetPlacementRow.node))).tuples().all())
        return [NodeStatus(row.node, row.alive, row.incarnation, row.memory, row.cpus, row.slots, row.images,
                           row.seen_at, used.get(row.node, Usage()).containers, lost.get(row.node, 0),
                           used.get(row.node, Usage()).memory, used.get(row.node, Usage()).cpus) for row in rows]


@dataclass(frozen=True)
class NodeStatus:
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


async def _usage(session: AsyncSession, nodes: list[str] | None) -> dict[str, Usage]:
    query = (select(FleetPlacementRow.node, func.sum(FleetPlacementRow.memory), func.sum(FleetPlacementRow.cpus),
                    func.count()).where(FleetPlacementRow.state == "placed").group_by(FleetPlacementRow.node))
    if nodes is not None:
        query = query.where(FleetPlacementRow.node.in_(nodes))
    rows = await session.execute(query)
    return {node: Usage(int(memory), float(cpus), int(count)) for node, memory, cpus, count in rows}


async def _mark_lost(session: AsyncSession, node: str, which: object) -> int:
    """The node's placed containers (those matching ``which``, else all) become lost, with their rows."""
    condition = [FleetPlacementRow.node == node, FleetPlacementRow.state == "placed"]
    if which is not None:
        condition.append(which)  # type: ignore[arg-type]
    ids = list(await session.scalars(select(FleetPlacementRow.container_id).where(*condition)))
    if ids:
        await session.execute(update(FleetPlacementRow).where(FleetPlacementRow.container_id.in_(ids))
                              .values(state="lost"))
        await session.execute(update(ContainerRow).where(ContainerRow.id.in_(ids)).values(status="lost"))
    return len(ids)
