"""Container expiry with replicas on a fleet (PostgreSQL, no cluster: one simulated engine stands for the
fleet every replica reaches). A container whose replica is gone is expired by another, once; a container
in use on one replica is not expired by the replica holding it, because each refreshes the last use of
what it is using."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from cove.config import Settings
from cove.service.containers import ContainerService
from cove.service.projects import ProjectPolicies
from cove.service.secrets import SecretKeeper
from cove.store.db import Database
from cove.store.models import ContainerRow, ReplicaRow
from cove.testing.fleet import SimulatedEngine
from tests.polling import eventually_async
from tests.postgres import PostgresServer
from tests.responses import test_replicas

database = test_replicas.database
"""The session's PostgreSQL (``COVE_TEST_DB=postgres``), else one of the module's own."""


def _replica(db: Database, engine: SimulatedEngine, name: str, tmp_path: Path, fleet: bool) -> ContainerService:
    settings = Settings(data_dir=tmp_path / name, replica_id=name, ray_address="127.0.0.2:6379" if fleet else None)
    return ContainerService(db, engine, settings, policies=ProjectPolicies.load(None, settings),
                            secrets=SecretKeeper(tmp_path / "secrets.key"))


async def _idle(db: Database, container_id: str) -> None:
    async with db.begin() as session:  # idle for two minutes, past its one
        await session.execute(update(ContainerRow).where(ContainerRow.id == container_id)
                              .values(last_active_at=int(time.time()) - 120))


async def _last_use(db: Database, container_id: str) -> bool:
    """Whether the container's last use is recent (the start of a use is recorded in the background)."""
    async with db.begin() as session:
        last = await session.scalar(select(ContainerRow.last_active_at).where(ContainerRow.id == container_id))
    return last is not None and last >= time.time() - 60


async def _scenario(url: str, tmp_path: Path, fleet: bool) -> dict[str, list[str]]:
    db = Database(url)
    await db.migrate()
    engine = SimulatedEngine()
    a, b = (_replica(db, engine, name, tmp_path, fleet) for name in ("a", "b"))
    now = time.time()

    async def create(name: str) -> str:
        return (await a.create("p", name=name, image=None, memory_limit="1g", cpu_limit=None, expires_minutes=1,
                               network_policy={"type": "disabled"})).id

    try:
        async with db.begin() as session:
            session.add_all([ReplicaRow(id=name, started_at=now, heartbeat_at=now) for name in ("a", "b")])
        names: dict[str, str] = {}
        seen: dict[str, list[str]] = {}
        if fleet:  # only on a fleet may b use a's container
            used = await create("in-use")
            names[used] = "in-use"
            await _idle(db, used)
            async with b.use("p", used):
                await eventually_async(lambda: _last_use(db, used), what="the use's start to be recorded")
                await _idle(db, used)  # a long command: its start is long past
                seen["b, while it uses a's"] = await b.expire_idle()
                seen["a, while b uses it"] = await a.expire_idle()
        orphan = await create("orphan")
        names[orphan] = "orphan"
        await _idle(db, orphan)
        async with db.begin() as session:  # a stops for good: its heartbeat row is buried
            await session.execute(delete(ReplicaRow).where(ReplicaRow.id == "a"))
        seen["b, once a is gone"] = await b.expire_idle()
        seen["b, again"] = await b.expire_idle()
        return {key: sorted(names[cid] for cid in ids) for key, ids in seen.items()}
    finally:
        await db.close()


@pytest.mark.parametrize("fleet", [True, False], ids=["fleet", "node-local"])
def test_a_gone_replicas_containers_expire_once_and_one_in_use_elsewhere_is_kept(
        database: PostgresServer, tmp_path: Path, fleet: bool) -> None:
    """Node-local containers of a gone replica are on its machine: nobody else can expire them."""
    seen = asyncio.run(_scenario(database.new_database(), tmp_path, fleet))
    used: dict[str, list[str]] = {"b, while it uses a's": [], "a, while b uses it": []} if fleet else {}
    assert seen == {**used, "b, once a is gone": ["orphan"] if fleet else [], "b, again": []}, seen
