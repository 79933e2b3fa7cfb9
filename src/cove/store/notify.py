"""PostgreSQL LISTEN/NOTIFY between replicas: one listening connection per server, waking local waiters.

A replica that stores stream events notifies ``EVENTS`` with the response id in the same transaction
(PostgreSQL delivers a notification only when its transaction commits, so a woken reader always finds
the rows). A reader on any replica registers its interest first, then reads the rows, then waits: a
notification that arrives between its read and its wait still wakes it (the event stays set), so none
is missed; and since it reads by sequence number it sees each event exactly once, in order, however
many notifications arrive. Notifications are only wake-ups: a reader also re-reads after ``POLL``
seconds without one, so a lost listening connection slows streams down but never stops them.

``CANCEL`` asks the replica running a response to stop it (``service/responses.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from cove.store.db import Database

log = logging.getLogger(__name__)

EVENTS = "cove_events"
CANCEL = "cove_cancel"
NOTIFY_EVENTS = text(f"SELECT pg_notify('{EVENTS}', :response_id)")
"""Run in the transaction that stores a response's events (a ``Write`` row per response)."""
POLL = 1.0
"""Seconds a reader waits for a notification before it reads again anyway."""


class Listener:
    """LISTENs on ``EVENTS`` and ``CANCEL`` through one connection held for the server's life."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._on_cancel: Callable[[str], None] | None = None
        self._connection: AsyncConnection | None = None

    async def start(self, on_cancel: Callable[[str], None]) -> None:
        self._on_cancel = on_cancel
        self._connection = await self.db.engine.connect()
        raw = (await self._connection.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.add_listener(EVENTS, self._notified)
        await raw.add_listener(CANCEL, self._notified)

    async def stop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # the store may be gone already
                await self._connection.close()
            self._connection = None

    def _notified(self, _connection: Any, _pid: int, channel: str, payload: str) -> None:
        if channel == CANCEL:
            if self._on_cancel is not None:
                self._on_cancel(payload)
            return
        for event in self._waiters.get(payload, ()):
            event.set()

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``key`` is notified on ``EVENTS``, while the block runs: clear it
        before reading, then wait on it."""
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters[key]
            waiters.discard(event)
            if not waiters:
                del self._waiters[key]

    async def notify(self, channel: str, payload: str) -> None:
        """Notifies at once (outside any caller's transaction)."""
        async with self.db.engine.begin() as connection:
            await connection.execute(text("SELECT pg_notify(:channel, :payload)"),
                                     {"channel": channel, "payload": payload})


async def wait(event: asyncio.Event) -> None:
    """Until ``event`` is set or ``POLL`` seconds pass; clears it."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(POLL):
            await event.wait()
    event.clear()
