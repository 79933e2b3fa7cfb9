"""Which servers share the store, and which of them are alive (PostgreSQL only; ``docs/replicas.md``).

Each replica keeps a row in ``replicas`` with a heartbeat (every ``COVE_HEARTBEAT_SECONDS``). One whose
heartbeat is older than ``COVE_REPLICA_LEASE_SECONDS`` is dead: any replica deletes its row, and from
then on the responses it owned are orphans that the others take over (``ResponseService``), each row
claimed by one replica only (``FOR UPDATE SKIP LOCKED``). A replica that finds its own row deleted was
taken for dead while it was still running (a long pause): its work has been taken over, so it stops
its own runs without writing them (``fenced``) and registers again.

On SQLite there is one server: nothing is registered and every replica question has the one answer.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import CursorResult

from cove.config import Settings
from cove.store.db import Database
from cove.store.models import ReplicaRow


class Replicas:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.me = settings.replica
        self.shared = not db.is_sqlite
        """Several servers may share the store (PostgreSQL)."""
        self.lease = settings.replica_lease_seconds

    async def register(self) -> None:
        """This replica's row, with a fresh heartbeat (a restart on the same data dir is the same replica)."""
        now = time.time()
        async with self.db.begin() as session:
            await session.execute(delete(ReplicaRow).where(ReplicaRow.id == self.me))
            await session.execute(insert(ReplicaRow).values(id=self.me, started_at=now, heartbeat_at=now))

    async def beat(self) -> bool:
        """Renews this replica's heartbeat; False when its row was gone (it had been taken for dead)."""
        async with self.db.begin() as session:
            result = await session.execute(update(ReplicaRow).where(ReplicaRow.id == self.me)
                                           .values(heartbeat_at=time.time()))
        return isinstance(result, CursorResult) and result.rowcount == 1

    async def bury(self) -> list[str]:
        """Deletes the rows of replicas whose heartbeat stopped; returns their ids."""
        async with self.db.begin() as session:
            result = await session.execute(delete(ReplicaRow).where(
                ReplicaRow.id != self.me, ReplicaRow.heartbeat_at < time.time() - self.lease)
                .returning(ReplicaRow.id))
            return list(result.scalars())

    async def leave(self) -> None:
        """At a graceful stop: nothing of this replica's is running any more."""
        async with self.db.begin() as session:
            await session.execute(delete(ReplicaRow).where(ReplicaRow.id == self.me))

    async def alive(self, replica_id: str) -> bool:
        async with self.db.begin() as session:
            beat = await session.scalar(select(ReplicaRow.heartbeat_at).where(ReplicaRow.id == replica_id))
        return beat is not None and beat >= time.time() - self.lease
