"""Group commit: the writes of many concurrent callers in one transaction, each caller still awaiting
its own durability.

Why: every response is written when it is created and again when it ends. With a transaction (and a
pooled connection) per write, SQLite serialises them on its write lock, and a writer that finds the
lock taken sleeps in its busy handler (1, 2, 5 ... 100 ms steps): at 16 concurrent responses most of
the server's time went to waiting and to BEGIN/COMMIT round trips through aiosqlite's thread. One
writer task instead takes every write waiting, runs each distinct statement once for all their rows
(``executemany``), commits once, then wakes every caller. Nothing waits on a lock it holds itself,
and a caller's ``write`` returns only after its rows are committed, so a finished response is
readable at once and nothing acknowledged is lost. On PostgreSQL it saves commits (WAL flushes) the
same way.

The writes waiting together are independent (no caller saw another's result before committing), so
any order of them is a valid one; each caller's own statements keep their order. If one caller's
rows fail (a constraint, text the store cannot hold), the batch rolls back and every caller's writes
are committed again on their own, so the error reaches only the caller it belongs to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from itertools import pairwise
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Executable
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from cove.store.bulk import CHUNK

T = TypeVar("T")

MAX_ROWS = 20_000
"""Rows one transaction takes at most (more wait for the next): bounds how long a batch holds the store."""


@dataclass(frozen=True)
class Write:
    """One statement and the rows (bound parameters) it runs for. Statements meant to be grouped across
    callers must be the same object (module constants), since they are told apart by identity."""

    statement: Executable
    rows: list[dict[str, Any]] = field(default_factory=list)


async def execute(target: AsyncConnection | AsyncSession, writes: list[Write]) -> None:
    """Runs ``writes`` in order in the caller's transaction, ``CHUNK`` rows per statement at a time
    (each chunk hands the event loop back). A session's writes run on its connection as Core
    statements: given a list of rows, the ORM would make an ``update`` a bulk update by primary key."""
    connection = await target.connection() if isinstance(target, AsyncSession) else target
    for write in writes:
        for start in range(0, len(write.rows), CHUNK):
            await connection.execute(write.statement, write.rows[start:start + CHUNK])


def merge(units: list[list[Write]]) -> list[Write] | None:
    """The units' writes as one ``Write`` per distinct statement, in an order that keeps every unit's
    own order; None when no such order exists (a unit runs a statement, another, then the first again)."""
    rows: dict[Executable, list[dict[str, Any]]] = {}
    order: TopologicalSorter[Executable] = TopologicalSorter()
    for unit in units:
        for write in unit:
            rows.setdefault(write.statement, []).extend(write.rows)
            order.add(write.statement)
        for earlier, later in pairwise(unit):
            if earlier.statement is not later.statement:
                order.add(later.statement, earlier.statement)
    try:
        return [Write(statement, rows[statement]) for statement in order.static_order()]
    except CycleError:
        return None


class Writer:
    """Commits through ``engine``; or, given a synchronous ``thread_engine`` (SQLite), in a thread of
    its own: a whole transaction is then one hand-over to that thread, where through aiosqlite each
    statement, and the commit, is one (each a wake-up of its thread and of the event loop), and the
    statements' compilation and JSON encoding run off the event loop."""

    def __init__(self, engine: AsyncEngine, thread_engine: Engine | None = None) -> None:
        self._engine = engine
        self._thread_engine = thread_engine
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="cove-writer") if thread_engine else None
        self._waiting: list[tuple[list[Write], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def write(self, *writes: Write) -> None:
        """Commits ``writes`` (in order, as one transaction with whatever else is waiting); returns once
        they are committed, or raises what committing them alone raised. A caller cancelled while
        waiting leaves its writes to be committed if their batch already started, else dropped."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((list(writes), future))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        await future

    async def run(self, work: Callable[[Connection], T]) -> T:
        """``work`` in a transaction of its own on a synchronous connection, committed when it returns
        (rolled back if it raises): in the writer's thread if it has one (one hand-over for the whole
        transaction, queued behind the batches), else through the async engine's bridge for sync code."""
        if self._thread is not None:
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._run_in_thread, work)
        async with self._engine.begin() as connection:
            return await connection.run_sync(work)

    def _run_in_thread(self, work: Callable[[Connection], T]) -> T:
        assert self._thread_engine is not None
        with self._thread_engine.begin() as connection:
            return work(connection)

    async def close(self) -> None:
        """Waits for the writes already handed in."""
        if self._task is not None:
            await self._task
        if self._thread is not None and self._thread_engine is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._thread_engine.dispose)
            self._thread.shutdown()

    async def _run(self) -> None:
        batch: list[tuple[list[Write], asyncio.Future[None]]] = []
        try:
            while self._waiting:
                batch = self._take()
                await self._commit_batch(batch)
        finally:
            self._task = None
            for _writes, future in batch:  # only if the task itself was stopped (cancelled at shutdown)
                settle(future, RuntimeError("the store's writer stopped before this write was committed"))

    def _take(self) -> list[tuple[list[Write], asyncio.Future[None]]]:
        batch: list[tuple[list[Write], asyncio.Future[None]]] = []
        rows = 0
        while self._waiting and (not batch or rows < MAX_ROWS):
            writes, future = self._waiting.pop(0)
            if future.done():  # its caller was cancelled before the batch started
                continue
            batch.append((writes, future))
            rows += sum(len(write.rows) for write in writes)
        return batch

    async def _commit_batch(self, batch: list[tuple[list[Write], asyncio.Future[None]]]) -> None:
        if not batch:
            return
        plan = merge([writes for writes, _future in batch]) if len(batch) > 1 else batch[0][0]
        if plan is not None:
            try:
                await self._commit(plan)
            except Exception as exc:
                if len(batch) == 1:
                    settle(batch[0][1], exc)
                    return
            else:
                for _writes, future in batch:
                    settle(future, None)
                return
        for writes, future in batch:  # one at a time, so an error reaches only its own caller
            try:
                await self._commit(writes)
            except Exception as exc:
                settle(future, exc)
            else:
                settle(future, None)

    async def _commit(self, writes: list[Write]) -> None:
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._commit_in_thread, writes)
            return
        async with self._engine.begin() as connection:
            await execute(connection, writes)

    def _commit_in_thread(self, writes: list[Write]) -> None:
        assert self._thread_engine is not None
        with self._thread_engine.begin() as connection:
            for write in writes:
                if write.rows:
                    connection.execute(write.statement, write.rows)


def settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    """Hands ``error`` (or success) to whoever awaits ``future``, unless it stopped waiting."""
    if future.done():  # its caller stopped waiting
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
