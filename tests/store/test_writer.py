"""The store's group commit (``cove.store.writer``) on a real database (SQLite, or PostgreSQL with
``COVE_TEST_DB=postgres``): writes waiting together share one transaction, every caller's own
statements keep their order, and one caller's bad rows fail that caller only."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cove.store.db import Database
from cove.store.models import ResponseItemRow, ResponseRow
from cove.store.writer import Write, merge
from tests.postgres import PostgresServer

INSERT_RESPONSE = insert(ResponseRow)
INSERT_ITEMS = insert(ResponseItemRow)
SET_STATUS = update(ResponseRow).where(ResponseRow.id == bindparam("b_id")).values(status=bindparam("b_status"))


@pytest.fixture
def db_url(tmp_path: Path, postgres: PostgresServer | None) -> Iterator[str]:
    yield postgres.new_database() if postgres is not None else f"sqlite+aiosqlite:///{tmp_path / 'cove.db'}"


def _response(response_id: str) -> dict[str, Any]:
    return {"id": response_id, "project": "p", "status": "in_progress", "background": False, "stored": True,
            "previous_response_id": None, "conversation_id": None, "created_at": 1.0, "body": {"id": response_id},
            "request": {}}


def _item(response_id: str, role: str, position: int = 0) -> dict[str, Any]:
    return {"id": f"{role}_{response_id}_{position}", "response_id": response_id, "role": role,
            "position": position, "data": {"text": response_id}}


def _create(response_id: str) -> list[Write]:
    """A response and its input item: the item refers to the response, so the order matters."""
    return [Write(INSERT_RESPONSE, [_response(response_id)]), Write(INSERT_ITEMS, [_item(response_id, "input")])]


async def _scenario(db_url: str, body: Any) -> Any:
    db = Database(db_url)
    await db.migrate()
    commits: list[None] = []

    def count(_connection: Any) -> None:
        commits.append(None)

    event.listen(Engine, "commit", count)  # every engine: SQLite's writer commits through its own
    try:
        return await body(db, commits)
    finally:
        event.remove(Engine, "commit", count)
        await db.close()


async def _count(db: Database, column: Any) -> int:
    async with db.begin() as session:
        return int(await session.scalar(select(func.count(column))) or 0)


def test_writes_waiting_together_share_one_transaction_and_keep_their_order(db_url: str) -> None:
    async def body(db: Database, commits: list[None]) -> tuple[int, int, int]:
        await db.write(*_create("resp_0"))  # finished below, in the same batch as 49 creates
        commits.clear()
        finish = [Write(SET_STATUS, [{"b_id": "resp_0", "b_status": "completed"}]),
                  Write(INSERT_ITEMS, [_item("resp_0", "output")])]
        await asyncio.gather(db.write(*finish), *(db.write(*_create(f"resp_{n}")) for n in range(1, 50)))
        return len(commits), await _count(db, ResponseRow.id), await _count(db, ResponseItemRow.id)

    batches, responses, items = asyncio.run(_scenario(db_url, body))
    assert batches == 1
    assert (responses, items) == (50, 51)


def test_bad_rows_fail_their_own_caller_only(db_url: str) -> None:
    async def body(db: Database, _commits: list[None]) -> tuple[list[Any], int]:
        await db.write(*_create("resp_taken"))
        outcomes = await asyncio.gather(*(db.write(*_create(f"resp_{n}")) for n in range(5)),
                                        db.write(*_create("resp_taken")), return_exceptions=True)
        return outcomes, await _count(db, ResponseRow.id)

    outcomes, responses = asyncio.run(_scenario(db_url, body))
    assert outcomes[:5] == [None] * 5
    assert isinstance(outcomes[5], IntegrityError)
    assert responses == 6


def test_units_without_a_common_order_are_committed_one_by_one(db_url: str) -> None:
    """A unit that sets a status, inserts, then sets it again has no merge with one that inserts first."""
    again = [Write(SET_STATUS, [{"b_id": "resp_a", "b_status": "queued"}]),
             Write(INSERT_ITEMS, [_item("resp_a", "output")]),
             Write(SET_STATUS, [{"b_id": "resp_a", "b_status": "completed"}])]
    assert merge([again, _create("resp_b")]) is None

    async def body(db: Database, _commits: list[None]) -> tuple[str | None, int]:
        await db.write(*_create("resp_a"))
        await asyncio.gather(db.write(*again), db.write(*_create("resp_b")))
        async with db.begin() as session:
            status = await session.scalar(select(ResponseRow.status).where(ResponseRow.id == "resp_a"))
        return status, await _count(db, ResponseItemRow.id)

    assert asyncio.run(_scenario(db_url, body)) == ("completed", 3)


def test_a_caller_cancelled_before_its_batch_writes_nothing(db_url: str) -> None:
    async def body(db: Database, _commits: list[None]) -> int:
        first = asyncio.ensure_future(db.write(*_create("resp_first")))
        cancelled = asyncio.ensure_future(db.write(*_create("resp_cancelled")))
        await asyncio.sleep(0)  # the scenario: both handed in, the writer not started yet
        cancelled.cancel()
        await first  # committed in the batch the cancelled write was handed in for
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        return await _count(db, ResponseRow.id)

    assert asyncio.run(_scenario(db_url, body)) == 1


def test_an_in_memory_database_is_written_through_its_own_engine() -> None:
    """A second engine would open a second, empty in-memory database: the writer must not use one."""
    async def body(db: Database, _commits: list[None]) -> int:
        await db.write(*_create("resp_memory"))
        return await _count(db, ResponseRow.id)

    assert asyncio.run(_scenario("sqlite+aiosqlite://", body)) == 1
