"""The audit trail: every command run in a container (and, with network policies, every egress
decision), with project, container, response and time.

Events are queued in memory and written in batches a few times a second, so recording a command
never adds a database round trip to its latency. A crash can lose the last fraction of a second.

Each container keeps its project's ``audit_rows`` newest events: when a batch takes it past that,
the oldest go, and a per-container count of pruned events is kept, so the listing can say that
(and how much) history is missing instead of silently starting later. A command loop cannot grow
the store without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from cove.ids import new_id
from cove.service.objects import AuditPage, ListPage, OperatorAuditEvent, audit_event, operator_audit_event
from cove.service.pagination import Page, paginate
from cove.store.db import Database
from cove.store.models import AuditEventRow, AuditPrunedRow

log = logging.getLogger(__name__)
_FLUSH_EVERY = 0.2
_MAX_PENDING = 100_000
"""Beyond this many unwritten events (a store that stopped answering) new ones are dropped, loudly."""


class AuditLog:
    def __init__(self, db: Database, keep: Callable[[str], int] | None = None) -> None:
        self.db = db
        self.keep = keep
        """Events kept per container, by project (its ``audit_rows`` quota); None: all (a reader only)."""
        self._pending: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        """Held while a batch is written, so a reader's flush waits for a batch already taken."""

    def record(self, project: str, container_id: str, kind: str, data: dict[str, Any],
               response_id: str | None = None) -> None:
        if len(self._pending) >= _MAX_PENDING:
            log.error("audit queue full: dropping a %s event for %s", kind, container_id)
            return
        self._pending.append({"id": new_id("aud"), "project": project, "container_id": container_id,
                              "response_id": response_id, "kind": kind, "created_at": time.time(), "data": data})

    def start(self) -> None:
        self._task = asyncio.create_task(self._flusher())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_EVERY)
            try:
                await self.flush()
            except Exception:
                log.exception("writing the audit trail failed; will retry")

    async def flush(self) -> None:
        """Writes what is pending; returns once everything recorded before the call is in the store."""
        async with self._flushing:
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            try:
                async with self.db.begin() as session:
                    await session.execute(insert(AuditEventRow), batch)
                    if self.keep is not None:
                        for container_id, project in {e["container_id"]: e["project"] for e in batch}.items():
                            await _prune(session, container_id, self.keep(project))
            except BaseException:
                self._pending[:0] = batch  # keep them for the next try
                raise

    async def events(self, project: str, container_id: str, page: Page) -> AuditPage:
        await self.flush()
        query = select(AuditEventRow).where(AuditEventRow.project == project,
                                            AuditEventRow.container_id == container_id)
        async with self.db.begin() as session:
            rows, has_more = await paginate(session, query, AuditEventRow, page)
            pruned = await _pruned(session, container_id)
        return AuditPage.of_page(ListPage.of([audit_event(row) for row in rows], has_more), pruned)

    async def pruned(self, container_id: str) -> int:
        """How many of the container's oldest events were pruned."""
        async with self.db.begin() as session:
            return await _pruned(session, container_id)

    async def newest(self, container_id: str, limit: int) -> list[OperatorAuditEvent]:
        """The operator's view: a container's newest ``limit`` events whatever their project (the
        container may be gone), oldest first."""
        await self.flush()
        async with self.db.begin() as session:
            rows = list(await session.scalars(select(AuditEventRow).where(AuditEventRow.container_id == container_id)
                                              .order_by(AuditEventRow.seq.desc()).limit(limit)))
        return [operator_audit_event(row) for row in reversed(rows)]


async def _prune(session: AsyncSession, container_id: str, keep: int) -> None:
    """Deletes all but the newest ``keep`` events of the container, counting what went."""
    cutoff = await session.scalar(select(AuditEventRow.seq).where(AuditEventRow.container_id == container_id)
                                  .order_by(AuditEventRow.seq.desc()).offset(keep).limit(1))
    if cutoff is None:
        return
    old = AuditEventRow.container_id == container_id, AuditEventRow.seq <= cutoff
    gone = await session.scalar(select(func.count()).select_from(AuditEventRow).where(*old)) or 0
    await session.execute(delete(AuditEventRow).where(*old))
    counted = await session.get(AuditPrunedRow, container_id)
    if counted is not None:
        counted.pruned += gone
    else:
        session.add(AuditPrunedRow(container_id=container_id, pruned=gone))


async def _pruned(session: AsyncSession, container_id: str) -> int:
    count = await session.scalar(select(AuditPrunedRow.pruned).where(AuditPrunedRow.container_id == container_id))
    return count or 0
