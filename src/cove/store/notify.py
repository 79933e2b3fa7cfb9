"""PostgreSQL LISTEN/NOTIFY between replicas: one listening connection per server, waking local waiters.

A replica that stores stream events notifies ``EVENTS`` with the response id in the same transaction
(PostgreSQL delivers a notification only when its transaction commits, so a woken reader always finds
the rows). A reader on any replica registers its interest first, then reads the rows, then waits: a
notification that arrives between its read and its wait still wakes it (the event stays set), so none
is missed; and since it reads by sequence number it sees each event exactly once, in order, however
many notifications arrive. Notifications are only wake-ups: a reader also re-reads after ``POLL``
seconds without one, so a lost listening connection slows streams down but never stops them.

The listening connection is opened again when it drops (PostgreSQL restarted, the backend terminated,
the network cut): its end is noticed at once when the server closes it, or by a probe every ``PROBE``
seconds when nothing says so. It is retried with backoff (up to ``RECONNECT_MAX`` seconds apart),
logged once when lost and once when back; once back every reader is woken, so each reads from its
last sequence number what it missed meanwhile (the events table is the truth, not the notifications).

``CANCEL`` asks the replica running a response to stop it (``service/responses.py``); the asking replica
sends it again each second until the response stopped, since a notification sent while the owner's
listening connection is being opened again reaches nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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
PROBE = 10.0
"""Seconds between checks that a listening connection nobody has closed still answers."""
RECONNECT_FIRST, RECONNECT_MAX = 0.1, 5.0
"""Backoff between attempts to open the listening connection again (doubling)."""


class Listener:
    """LISTENs on ``EVENTS`` and ``CANCEL`` through one connection held for the server's life, opened
    again whenever it drops. ``name`` is its ``application_name`` (to find it in ``pg_stat_activity``)."""

    def __init__(self, db: Database, name: str = "cove-listen") -> None:
        self.db = db
        self.name = name
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._on_cancel: Callable[[str], None] | None = None
        self._connection: AsyncConnection | None = None
        self._dropped = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    async def start(self, on_cancel: Callable[[str], None]) -> None:
        self._on_cancel = on_cancel
        await self._open()  # the first one must work: the server does not start without its database
        self._keeper = asyncio.create_task(self._keep())

    async def _open(self) -> None:
        connection = await self.db.engine.connect()
        try:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            dropped = self._dropped = asyncio.Event()
            raw.add_termination_listener(lambda _connection: dropped.set())
            await raw.fetchval("SELECT set_config('application_name', $1, false)", self.name)
            await raw.add_listener(EVENTS, self._notified)
            await raw.add_listener(CANCEL, self._notified)
        except BaseException:
            await _discard(connection)
            raise
        self._connection = connection

    async def _keep(self) -> None:
        """Opens the connection again each time it drops, and wakes every reader once it is back."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE):
                    await self._dropped.wait()
            if not self._dropped.is_set() and await self._answers():
                continue
            lost_at = time.monotonic()
            log.warning("the LISTEN connection to PostgreSQL dropped; opening it again (streams followed from "
                        "other replicas go on at the %g s poll meanwhile)", POLL)
            if self._connection is not None:
                await _discard(self._connection)
                self._connection = None
            delay = RECONNECT_FIRST
            while True:
                try:
                    await self._open()
                    break
                except Exception:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX)
            log.warning("the LISTEN connection to PostgreSQL is open again after %.1f s", time.monotonic() - lost_at)
            for events in self._waiters.values():
                for event in events:
                    event.set()

    async def _answers(self) -> bool:
        """Whether the listening connection answers a query within ``PROBE`` seconds."""
        try:
            assert self._connection is not None
            raw = (await self._connection.get_raw_connection()).driver_connection
            assert raw is not None
            async with asyncio.timeout(PROBE):
                await raw.execute("SELECT 1")
        except Exception:
            return False
        return True

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
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


async def _discard(connection: AsyncConnection) -> None:
    """A listening connection that dropped (or half opened): out of the pool for good, never reused."""
    with contextlib.suppress(Exception):
        await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()
