"""The audit trail: every command run in a container (and, with network policies, every egress
decision), with project, container, response and time.

Events are queued in memory and written in batches a few times a second, so recording a command
never adds a database round trip to its latency. A crash can lose the last fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sqlalchemy import insert, select

from cove.ids import new_id
from cove.service.objects import AuditEvent, ListPage, OperatorAuditEvent, audit_event, operator_audit_event
from cove.service.pagination import Page, paginate
from cove.store.db import Database
from cove.store.models import AuditEventRow

log = logging.getLogger(__name__)
_FLUSH_EVERY = 0.2
_MAX_PENDING = 100_000
"""Beyond this many unwritten events (a store that stopped answering) new ones are dropped, loudly."""


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db
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
            except BaseException:
                self._pending[:0] = batch  # keep them for the next try
                raise

    async def events(self, project: str, container_id: str, page: Page) -> ListPage[AuditEvent]:
        await self.flush()
        query = select(AuditEventRow).where(AuditEventRow.project == project,
                                            AuditEventRow.container_id == container_id)
        async with self.db.begin() as session:
            rows, has_more = await paginate(session, query, AuditEventRow, page)
        return ListPage.of([audit_event(row) for row in rows], has_more)

    async def newest(self, container_id: str, limit: int) -> list[OperatorAuditEvent]:
        """The operator's view: a container's newest ``limit`` events whatever their project (the
        container may be gone), oldest first."""
        await self.flush()
        async with self.db.begin() as session:
            rows = list(await session.scalars(select(AuditEventRow).where(AuditEventRow.container_id == container_id)
                                              .order_by(AuditEventRow.seq.desc()).limit(limit)))
        return [operator_audit_event(row) for row in reversed(rows)]
