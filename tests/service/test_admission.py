"""Container admission (``cove.service.admission``) on a real database (SQLite, or PostgreSQL with
``COVE_TEST_DB=postgres``): creates waiting together are decided in one transaction exactly as if
they had come one after another, a create the store cannot take fails alone, and a create whose
caller stopped waiting leaves no row behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, insert, select
from sqlalchemy.exc import IntegrityError

from cove.config import Settings, parse_size
from cove.errors import TooManyRequests
from cove.service.admission import Admissions, Room
from cove.service.projects import Quotas
from cove.store.db import Database
from cove.store.models import ContainerRow, SnapshotRow, columns
from tests.polling import eventually_async
from tests.postgres import PostgresServer

QUOTAS = {
    "few": Quotas(running_containers=3, memory=parse_size("8g"), disk=parse_size("100g"), background_queued=1,
                  background_running=1, audit_rows=1, file_bytes=1),
    "small": Quotas(running_containers=10, memory=parse_size("2g"), disk=parse_size("100g"), background_queued=1,
                    background_running=1, audit_rows=1, file_bytes=1),
    "other": Quotas(running_containers=10, memory=parse_size("8g"), disk=parse_size("100g"), background_queued=1,
                    background_running=1, audit_rows=1, file_bytes=1),
}


@pytest.fixture
def db_url(tmp_path: Path, postgres: PostgresServer | None) -> Iterator[str]:
    yield postgres.new_database() if postgres is not None else f"sqlite+aiosqlite:///{tmp_path / 'cove.db'}"


def _row(number: int, project: str) -> ContainerRow:
    now = int(time.time())
    return ContainerRow(id=f"cntr_{project}_{number}", project=project, name=str(number), image="default",
                        status="running", memory_limit="1g", cpu_limit=1.0, expires_minutes=20,
                        network_policy={"type": "disabled"}, created_at=now, last_active_at=now)


async def _scenario(db_url: str, tmp_path: Path, body: Callable[[Database, Admissions, list[None]], Awaitable[Any]],
                    room: type[Room] = Room) -> Any:
    db = Database(db_url)
    await db.migrate()
    settings = Settings(data_dir=tmp_path / "data", max_containers=6)
    admissions = Admissions(db, lambda session: room(session, QUOTAS.__getitem__, settings))
    commits: list[None] = []

    def count(_connection: Any) -> None:
        commits.append(None)

    event.listen(Engine, "commit", count)
    try:
        return await body(db, admissions, commits)
    finally:
        event.remove(Engine, "commit", count)
        await admissions.close()
        await db.close()


async def _stored(db: Database) -> set[str]:
    async with db.begin() as session:
        return set((await session.scalars(select(ContainerRow.id))).all())


async def _outcome(admission: Awaitable[None]) -> str:
    try:
        await admission
    except TooManyRequests as exc:
        return exc.param or "server"
    return "admitted"


def test_creates_waiting_together_share_one_transaction_and_are_decided_in_arrival_order(
        db_url: str, tmp_path: Path) -> None:
    async def body(db: Database, admissions: Admissions, commits: list[None]) -> tuple[list[str], int, set[str]]:
        rows = [*(_row(n, "few") for n in range(5)), *(_row(n, "small") for n in range(3)),
                *(_row(n, "other") for n in range(2))]
        outcomes = await asyncio.gather(*(_outcome(admissions.admit(row, [])) for row in rows))
        return outcomes, len(commits), await _stored(db)

    outcomes, commits, stored = asyncio.run(_scenario(db_url, tmp_path, body))
    # "few" may run 3, "small" has memory for 2, and the server (6 at most) has room for 1 of "other".
    assert outcomes == ["admitted"] * 3 + ["running_containers"] * 2 + ["admitted"] * 2 + ["memory"] + \
        ["admitted", "server"]
    assert commits == 1
    assert stored == {"cntr_few_0", "cntr_few_1", "cntr_few_2", "cntr_small_0", "cntr_small_1", "cntr_other_0"}


def test_a_create_the_store_refuses_fails_alone(db_url: str, tmp_path: Path) -> None:
    async def body(db: Database, admissions: Admissions, _commits: list[None]) -> tuple[list[Any], set[str]]:
        await admissions.admit(_row(0, "other"), [])
        again = _row(0, "other")  # the same id: the store's unique constraint refuses it
        outcomes = await asyncio.gather(admissions.admit(_row(1, "other"), []), admissions.admit(again, []),
                                        admissions.admit(_row(2, "other"), []), return_exceptions=True)
        return list(outcomes), await _stored(db)

    outcomes, stored = asyncio.run(_scenario(db_url, tmp_path, body))
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], IntegrityError)
    assert stored == {"cntr_other_0", "cntr_other_1", "cntr_other_2"}


class _AbandoningRoom(Room):
    """A room that, deciding a create, runs ``abandon`` (from whatever thread decides it)."""

    abandon: Callable[[], object] = staticmethod(lambda: None)

    def take(self, project: str, memory_limit: str, *, new_disk: bool = True) -> None:
        _AbandoningRoom.abandon()
        super().take(project, memory_limit, new_disk=new_disk)


def test_a_create_whose_caller_stops_waiting_mid_decision_leaves_no_row(db_url: str, tmp_path: Path) -> None:
    async def body(db: Database, admissions: Admissions, _commits: list[None]) -> tuple[bool, set[str]]:
        loop = asyncio.get_running_loop()
        kept = asyncio.create_task(admissions.admit(_row(0, "other"), []))
        abandoned = asyncio.create_task(admissions.admit(_row(1, "other"), []))
        # Both are in the group being decided when the second's caller is cancelled.
        _AbandoningRoom.abandon = lambda: loop.call_soon_threadsafe(abandoned.cancel)
        await kept
        await admissions.close()
        async def gone() -> set[str] | None:
            return await _gone(db, "cntr_other_1")

        stored: set[str] = await eventually_async(gone, what="the abandoned row to be deleted")
        return abandoned.cancelled(), stored

    cancelled, stored = asyncio.run(_scenario(db_url, tmp_path, body, _AbandoningRoom))
    assert cancelled
    assert stored == {"cntr_other_0"}


async def _gone(db: Database, container_id: str) -> set[str] | None:
    stored = await _stored(db)
    return None if container_id in stored else stored


def test_snapshots_count_against_disk_in_a_project_with_and_without_containers(db_url: str, tmp_path: Path) -> None:
    """Default disk 10g a container; "tight" may have 25g: a 6g snapshot leaves room for one disk, not two."""
    quotas = {"tight": replace(QUOTAS["other"], disk=parse_size("25g"))}

    async def body(db: Database, _admissions: Admissions, _commits: list[None]) -> list[str]:
        settings = Settings(data_dir=tmp_path / "data", max_containers=6, disk_limit="10g")
        async with db.begin() as session:
            session.add(SnapshotRow(id="snap_0", project="tight", container_id="cntr_gone", image="default",
                                    bytes=parse_size("6g"), files=[], created_at=time.time()))
        def decide(connection: Connection) -> str:
            room = Room(connection, quotas.__getitem__, settings)
            try:
                room.take("tight", "1g")
            except TooManyRequests as exc:
                return exc.param or ""
            connection.execute(insert(ContainerRow), [columns(_row(int(time.time() * 1e6), "tight"))])
            return "admitted"

        # The first decision meets no container; the later ones read the bytes beside one.
        return [await db.run(decide) for _ in range(3)]

    assert asyncio.run(_scenario(db_url, tmp_path, body)) == ["admitted", "disk", "disk"]
