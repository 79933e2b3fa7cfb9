"""A response being generated: its task, its event log, and how its events reach the store.

Runs are decoupled from HTTP connections: a client that disconnects stops reading, the run goes
on and its result is stored. Background runs also keep their events in the store, so a client
can resume a stream by sequence number, even from another server process.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert

from cove.agent.builder import ResponseBuilder
from cove.agent.events import EventLog
from cove.agent.progress import Progress
from cove.store.db import Database
from cove.store.models import ResponseEventRow
from cove.store.notify import NOTIFY_EVENTS
from cove.store.writer import Write

_INSERT_EVENTS = insert(ResponseEventRow)
_FLUSH_EVERY = 0.2
"""Seconds between writes of a background run's events: deltas are batched, not written one by one."""


@dataclass
class Run:
    id: str
    project: str
    response: dict[str, Any]
    stored: bool
    background: bool
    conversation_id: str | None
    input_items: list[dict[str, Any]]
    earlier: list[dict[str, Any]] | None = None
    """The items before this response's input (its chain or conversation); None until the run's turn
    is made from the store, or given by the caller (a WebSocket's cache of the responses it made)."""
    steering: list[Any] = field(default_factory=list)
    """Input a WebSocket client queued into this running response (``response.steer``), which the loop
    watches (``Turn.steering``)."""
    log: EventLog = field(default_factory=EventLog)
    progress: Progress = field(default_factory=Progress)
    """What it is doing (``agent/progress.py``); the loop's turn keeps it up to date."""
    heartbeat_at: float | None = None
    """When this server last wrote its heartbeat (background runs)."""
    cut: set[int] | None = None
    """A run resumed after a restart: the indices of its output items the restart cut off (``agent/resume.py``)."""
    task: asyncio.Task[None] | None = None
    fenced: bool = False
    """Another replica took this run's response over (this one was taken for dead): it stops and writes nothing."""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    builder: ResponseBuilder = field(init=False)
    _pending: list[dict[str, Any]] = field(default_factory=list)
    _flushed_at: float = 0.0
    _db: Database | None = None

    def __post_init__(self) -> None:
        self.builder = ResponseBuilder(self.response, self.emit)

    def keep_events(self, db: Database) -> None:
        self._db = db

    async def emit(self, event: dict[str, Any]) -> None:
        await self.log.append(event)
        if self._db is None:
            return
        self._pending.append(event)
        if time.monotonic() - self._flushed_at >= _FLUSH_EVERY or not event["type"].endswith(".delta"):
            await self.flush()

    async def flush(self) -> None:
        """Stores the events not yet stored; on PostgreSQL, notifies readers on other replicas in the same
        transaction (``store/notify.py``)."""
        if self._db is None or not self._pending or self.fenced:
            return
        pending, self._pending = self._pending, []
        self._flushed_at = time.monotonic()
        writes = [Write(_INSERT_EVENTS, [
            {"response_id": self.id, "sequence_number": e["sequence_number"], "data": e} for e in pending])]
        if not self._db.is_sqlite:
            writes.append(Write(NOTIFY_EVENTS, [{"response_id": self.id}]))
        await self._db.write(*writes)
