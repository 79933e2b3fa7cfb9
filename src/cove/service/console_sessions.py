"""The web console's sign-in sessions, kept in the store (``docs/console.md``).

The API key stays on the server: the browser holds a random session id in a cookie (``api/console/
sessions.py`` says how the cookie is locked down), and this table holds the id's SHA-256, the project,
the key sealed with the server's sealing key, the session's CSRF token and its expiry. Replicas share the
store and the sealing key, so a browser may land on any of them, and a restart signs nobody out.
Signing out deletes the row, so a copied cookie dies with it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from cove.store.db import Database
from cove.store.models import ConsoleSessionRow
from cove.store.sealing import Sealer, SealingError

LIFETIME = 12 * 3600.0
"""Seconds a session lasts from sign-in, used or not."""
MOST_PER_PROJECT = 1_000
"""Sessions one project keeps at once; beyond it its oldest is signed out (a key holder signing in in a
loop must not fill the store)."""
_PURPOSE = "console-session"


@dataclass(frozen=True)
class ConsoleSession:
    project: str
    key: str
    """The API key it signed in with: the console calls the API for the person with it."""
    expires_at: float
    csrf: str


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class ConsoleSessions:
    def __init__(self, db: Database, sealer: Sealer) -> None:
        self.db = db
        self.sealer = sealer

    async def open(self, project: str, key: str) -> tuple[str, ConsoleSession]:
        """A new session for ``project`` (whose key the caller checked); returns its id, for the cookie."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        session = ConsoleSession(project, key, now + LIFETIME, secrets.token_urlsafe(32))
        async with self.db.begin() as db:
            await db.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at < now))
            db.add(ConsoleSessionRow(id_hash=_hash(session_id), project=project, key=self.sealer.seal(key, _PURPOSE),
                                     csrf=session.csrf, created_at=now, expires_at=session.expires_at))
            await db.flush()
            kept = select(ConsoleSessionRow.id_hash).where(ConsoleSessionRow.project == project).order_by(
                ConsoleSessionRow.created_at.desc()).limit(MOST_PER_PROJECT)
            await db.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.project == project,
                                                             ConsoleSessionRow.id_hash.not_in(kept)))
        return session_id, session

    async def find(self, session_id: str | None) -> ConsoleSession | None:
        """The live session of that id, or None (unknown, signed out, expired, or sealed with another key)."""
        if not session_id:
            return None
        async with self.db.session() as db:
            row = await db.get(ConsoleSessionRow, _hash(session_id))
        if row is None:
            return None
        if row.expires_at < time.time():
            await self.close(session_id)
            return None
        try:
            key = self.sealer.open(row.key, _PURPOSE)
        except SealingError:  # the key file was replaced: sealed values are gone, so is the session
            return None
        return ConsoleSession(row.project, key, row.expires_at, row.csrf)

    async def close(self, session_id: str | None) -> None:
        if session_id:
            async with self.db.begin() as db:
                await db.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.id_hash == _hash(session_id)))
