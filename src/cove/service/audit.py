"""The audit trail: every command run in a container (and, with network policies, every egress
decision), with project, container, response and time.

Events are queued in memory and written in batches a few times a second, so recording a command
never adds a database round trip to its latency. So that a crash loses none, each event is also
appended to a journal file in the data dir as it is recorded (one ``write``, no ``fsync``: a killed
server's writes are in the kernel already; a power loss can take the last seconds the kernel had not
written out). A flush starts a new journal file and deletes the old one once its batch is committed;
at start, what a crash left in journal files is written to the store, skipping events already there.

Each container keeps its project's ``audit_rows`` newest events: when a batch takes it past that,
the oldest go, and a per-container count of pruned events is kept, so the listing can say that
(and how much) history is missing instead of silently starting later. A command loop cannot grow
the store without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from cove.ids import new_id
from cove.service.objects import AuditPage, ListPage, OperatorAuditEvent, audit_event, operator_audit_event
from cove.service.pagination import Page, paginate
from cove.store.db import Database
from cove.store.models import AuditEventRow, AuditPrunedRow

log = logging.getLogger(__name__)
_FLUSH_EVERY = 0.2
_REPLAY_CHUNK = 500
_MAX_PENDING = 100_000
"""Beyond this many unwritten events (a store that stopped answering) new ones are dropped, loudly."""


class AuditLog:
    def __init__(self, db: Database, keep: Callable[[str], int] | None = None, journal: Path | None = None) -> None:
        self.db = db
        self.keep = keep
        """Events kept per container, by project (its ``audit_rows`` quota); None: all (a reader only)."""
        self.journal = journal
        """The journal directory (None: no journal, for readers)."""
        self._journal_fd = -1
        self._journal_path: Path | None = None
        self._sealed: list[Path] = []
        """Journal files started over since, whose events are not all committed yet."""
        self._pending: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        """Held while a batch is written, so a reader's flush waits for a batch already taken."""

    def record(self, project: str, container_id: str, kind: str, data: dict[str, Any],
               response_id: str | None = None) -> None:
        if len(self._pending) >= _MAX_PENDING:
            log.error("audit queue full: dropping a %s event for %s", kind, container_id)
            return
        event = {"id": new_id("aud"), "project": project, "container_id": container_id,
                 "response_id": response_id, "kind": kind, "created_at": time.time(), "data": data}
        self._pending.append(event)
        if self._journal_fd >= 0:
            try:
                os.write(self._journal_fd, json.dumps(event, separators=(",", ":")).encode() + b"\n")
            except OSError as exc:  # a full disk: the event is still queued for the store
                log.error("could not journal an audit event: %s", exc)

    async def start(self) -> None:
        if self.journal is not None:
            self.journal.mkdir(mode=0o700, exist_ok=True)
            await self._replay(sorted(self.journal.glob("*.jsonl")))
            self._start_journal()
        self._task = asyncio.create_task(self._flusher())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        if self._journal_fd >= 0 and not self._pending:
            os.close(self._journal_fd)
            self._journal_fd = -1
            if self._journal_path is not None:
                self._journal_path.unlink(missing_ok=True)

    def _start_journal(self) -> None:
        """A new journal file for the events recorded from now on (the old one is kept until committed)."""
        assert self.journal is not None
        if self._journal_fd >= 0 and self._journal_path is not None:
            os.close(self._journal_fd)
            self._sealed.append(self._journal_path)
        self._journal_path = self.journal / f"{time.time_ns():020d}.jsonl"
        self._journal_fd = os.open(self._journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    async def _replay(self, files: list[Path]) -> None:
        """Writes the events that journal files of a crashed run hold and the store does not, then
        removes the files. A line cut short by the crash is skipped (its event never finished recording)."""
        if not files:
            return
        events: dict[str, dict[str, Any]] = {}
        for path in files:
            for line in path.read_bytes().splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    events[event["id"]] = event
        ids = list(events)
        async with self.db.begin() as session:
            for start in range(0, len(ids), _REPLAY_CHUNK):
                chunk = ids[start:start + _REPLAY_CHUNK]
                for known in await session.scalars(select(AuditEventRow.id).where(AuditEventRow.id.in_(chunk))):
                    events.pop(known, None)
            if events:
                await session.execute(insert(AuditEventRow), list(events.values()))
        log.info("audit journal: %d events written after a crash", len(events))
        for path in files:
            path.unlink()

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
            if self._journal_fd >= 0:
                self._start_journal()
            sealed = list(self._sealed)
            try:
                async with self.db.begin() as session:
                    await session.execute(_INSERT, batch)
                    if self.keep is not None:
                        for container_id, project in {e["container_id"]: e["project"] for e in batch}.items():
                            await _prune(session, container_id, self.keep(project))
            except BaseException:
                self._pending[:0] = batch  # keep them for the next try (and their journal files)
                raise
            for path in sealed:  # every event these files hold is in the store now
                path.unlink(missing_ok=True)
                self._sealed.remove(path)

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


_INSERT = insert(cast(Table, AuditEventRow.__table__))
"""A batch goes in through Core's executemany, without the ORM's per-row bulk-insert bookkeeping: a flush
runs on the event loop, and every request waiting meanwhile pays for its CPU."""
_CUTOFF = (select(AuditEventRow.seq).where(AuditEventRow.container_id == bindparam("container_id"))
           .order_by(AuditEventRow.seq.desc()).offset(bindparam("keep")).limit(1))
_DELETE_UPTO = delete(AuditEventRow).where(AuditEventRow.container_id == bindparam("container_id"),
                                           AuditEventRow.seq <= bindparam("cutoff")
                                           ).execution_options(synchronize_session=False)
"""``_prune``'s statements, built once (every flush prunes each container it wrote to); the delete's
count of rows is what went, so no count query runs. The session holds no audit rows to synchronize."""


async def _prune(session: AsyncSession, container_id: str, keep: int) -> None:
    """Deletes all but the newest ``keep`` events of the container, counting what went."""
    cutoff = await session.scalar(_CUTOFF, {"container_id": container_id, "keep": keep})
    if cutoff is None:
        return
    deleted = await session.execute(_DELETE_UPTO, {"container_id": container_id, "cutoff": cutoff})
    gone = cast(CursorResult[Any], deleted).rowcount
    counted = await session.get(AuditPrunedRow, container_id)
    if counted is not None:
        counted.pruned += gone
    else:
        session.add(AuditPrunedRow(container_id=container_id, pruned=gone))


async def _pruned(session: AsyncSession, container_id: str) -> int:
    count = await session.scalar(select(AuditPrunedRow.pruned).where(AuditPrunedRow.container_id == container_id))
    return count or 0
