"""Serializing quota checks: a check and the insert it allows must be one step, or two concurrent
requests both see room for one more and both get it.

A transaction that checks a quota first updates its named row in ``locks``. On PostgreSQL that takes
the row's lock until commit, and the next such transaction's later reads (read committed) see what
this one inserted; on SQLite the update takes the database's write lock at once, before anything is
read. Either way the check-then-insert runs one at a time, across connections and across servers
sharing the database, and holds the lock only for a few statements.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Connection, Update, update
from sqlalchemy.ext.asyncio import AsyncSession

from cove.store.models import LockRow

Name = Literal["containers", "responses", "files"]


async def hold(session: AsyncSession, name: Name) -> None:
    """Takes the lock ``name`` (rows made by migrations 0005 and 0006) until the session's transaction ends."""
    await session.execute(_take(name))


def hold_in(connection: Connection, name: Name) -> None:
    """``hold`` in a synchronous transaction (``Database.run``)."""
    connection.execute(_take(name))


def _take(name: Name) -> Update:
    return update(LockRow).where(LockRow.name == name).values(version=LockRow.version + 1)
