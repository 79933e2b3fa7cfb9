"""The database: one async engine, migrated by Alembic at start-up.

SQLite (WAL, in the data dir) by default; PostgreSQL through ``COVE_DATABASE_URL``. The SQLite file
holds every response, conversation and audited command: it is made 0600 before SQLite opens it,
and SQLite gives its ``-wal`` and ``-shm`` files the database file's mode.

SQLite runs with ``synchronous=NORMAL`` in WAL mode: a commit is written to the WAL file but not
fsynced (checkpoints are). A committed transaction survives the server process being killed (the
kernel has the write), which is the failure Cove repairs at start-up; only a power loss or kernel
crash can take the last few commits back, never corrupt the file. ``FULL`` would fsync every commit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from cove.errors import InvalidRequest
from cove.store.writer import Write, Writer

T = TypeVar("T")

_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x636F7665  # "cove"
"""The PostgreSQL advisory lock a migration holds until its transaction ends."""
_UNSTORABLE_TEXT = {"22021", "22P05"}
"""PostgreSQL's character_not_in_repertoire and untranslatable_character: a NUL in a text value."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _refuse_unstorable_text(context: ExceptionContext) -> None:
    """PostgreSQL text holds no NUL (SQLite's does): an id, name or cursor with one, wherever it
    comes from, is the client's error, not the server's."""
    error: BaseException | None = context.original_exception
    while error is not None:
        if getattr(error, "sqlstate", None) in _UNSTORABLE_TEXT:
            raise InvalidRequest("Text in this request contains a character the store cannot hold (NUL).",
                                 code="invalid_text")
        error = error.__cause__


def _is_plain_file(database: str | None) -> bool:
    """An SQLite database named by a path (not in memory, not a ``file:`` URI)."""
    return bool(database) and database != ":memory:" and not str(database).startswith("file:")


def _private_sqlite_files(database: str | None) -> None:
    """The database file and its companions, 0600 (made so if new, made so again if older)."""
    if database is None or not _is_plain_file(database):
        return
    path = Path(database)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for companion in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))):
        with contextlib.suppress(FileNotFoundError):
            companion.chmod(0o600)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: AsyncEngine = create_async_engine(url)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_async_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)
            event.listen(self.engine.sync_engine, "handle_error", _refuse_unstorable_text)
        self.session = async_sessionmaker(self.engine, expire_on_commit=False)
        # A second engine sees the same database only through a file (one in memory is per connection).
        in_file = self.is_sqlite and _is_plain_file(make_url(url).database)
        self._writer = Writer(self.engine, self._thread_engine() if in_file else None)

    def _thread_engine(self) -> Engine:
        """The same SQLite file through the synchronous driver, for the writer's own thread."""
        engine = create_engine(make_url(self.url).set(drivername="sqlite"), pool_size=1, max_overflow=0)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    async def migrate(self) -> None:
        """Brings the schema to the newest revision."""
        if self.is_sqlite:
            _private_sqlite_files(make_url(self.url).database)
        async with self.engine.begin() as conn:
            if not self.is_sqlite:  # replicas starting at once migrate one after another (docs/replicas.md)
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            await conn.run_sync(self._upgrade)

    @staticmethod
    def _upgrade(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    def begin(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session inside a transaction, committed (or rolled back) and closed on exit:
        ``async with db.begin() as session``."""
        return self.session.begin()

    async def write(self, *writes: Write) -> None:
        """Commits ``writes`` as one transaction, grouped with other callers' (``store/writer.py``):
        the path for the many small writes of responses, where one transaction each would queue on
        SQLite's write lock."""
        await self._writer.write(*writes)

    async def run(self, work: Callable[[Connection], T]) -> T:
        """``work(connection)``, synchronous code, as one transaction (``Writer.run``): on an SQLite file a
        single hand-over to the writer's thread, where through aiosqlite each statement is one."""
        return await self._writer.run(work)

    async def close(self) -> None:
        await self._writer.close()
        await self.engine.dispose()

