"""The fleet's registry and placement choice, on the tests' database (SQLite, or PostgreSQL with
``COVE_TEST_DB=postgres``), without a cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cove.sandbox.fleet.placement import Assignment, KeptSnapshot, Need, NodeReport, Usage, choose
from cove.service.fleet import FleetRegistry
from cove.store.db import Database
from tests.postgres import PostgresServer

GIB = 1 << 30


def _node(name: str, incarnation: str = "a", slots: int = 10, images: frozenset[str] = frozenset()) -> NodeReport:
    return NodeReport(name, incarnation, 4 * GIB, 2.0, slots, images)


def test_choice_prefers_the_image_then_free_memory_and_never_overfills() -> None:
    need = Need(GIB, 1.0, "python")
    empty, busy = _node("empty"), _node("busy", images=frozenset({"python"}))
    assert choose(need, [(empty, Usage()), (busy, Usage(2 * GIB, 2.0, 2))]) == busy
    assert choose(Need(GIB, 1.0, "other"), [(empty, Usage()), (busy, Usage(2 * GIB, 2.0, 2))]) == empty
    assert choose(need, [(busy, Usage(4 * GIB, 0.0, 1))]) is None  # memory is reserved
    assert choose(need, [(_node("full", slots=1), Usage(0, 0.0, 1))]) is None
    assert choose(need, [(empty, Usage(0, 64.0, 0))]) == empty  # CPU is overcommitted, never refused


@pytest.fixture
def db_url(tmp_path: Path, postgres: PostgresServer | None) -> str:
    return postgres.new_database() if postgres else f"sqlite+aiosqlite:///{tmp_path}/fleet.db"


def _run(db_url: str, scenario: Callable[[FleetRegistry], Awaitable[None]]) -> None:
    async def run() -> None:
        db = Database(db_url)
        await db.migrate()
        try:
            await scenario(FleetRegistry(db))
        finally:
            await db.close()

    asyncio.run(run())


def test_concurrent_placements_never_take_more_than_a_node_has(db_url: str) -> None:
    _run(db_url, _concurrent)


def test_a_lost_or_restarted_node_loses_its_containers(db_url: str) -> None:
    _run(db_url, _lost_and_restarted)


def test_replicas_that_see_new_nodes_at_once_both_record_them(db_url: str) -> None:
    """Two replicas' checks (each its own database pool) meet nodes neither has recorded: both succeed
    (replicas starting together failed their startup on the new row's key before the retry)."""

    async def scenario(registry: FleetRegistry) -> None:
        other = Database(db_url)
        try:
            twin = FleetRegistry(other)
            for round_ in range(5):
                nodes = [_node(f"r{round_}n{i}") for i in range(3)]
                assert await asyncio.gather(registry.seen(nodes), twin.seen(nodes)) == [0, 0]
            assert len(await registry.status()) == 15
        finally:
            await other.close()

    _run(db_url, scenario)


def test_snapshots_stay_with_their_node_through_a_restart_and_are_lost_with_it(db_url: str) -> None:
    async def scenario(registry: FleetRegistry) -> None:
        await registry.seen([_node("n1"), _node("n2")])
        await registry.keep_snapshot("s1", "n1")
        await registry.keep_snapshot("s2", "n2")
        await registry.seen([_node("n1", incarnation="b"), _node("n2")])  # a host restart: its disk stays
        assert await registry.snapshot("s1") == KeptSnapshot("n1")
        await registry.lose("n1")
        assert (await registry.snapshot("s1"), await registry.snapshot("s2")) == (
            KeptSnapshot("n1", lost=True), KeptSnapshot("n2"))
        await registry.forget_snapshot("s1")
        assert await registry.snapshot("s1") is None

    _run(db_url, scenario)


async def _concurrent(registry: FleetRegistry) -> None:
    nodes = [_node("n1", slots=3), _node("n2", slots=3)]
    await registry.seen(nodes)
    placed = await asyncio.gather(*(registry.place(f"c{i}", Need(GIB, 1.0, "x"), nodes) for i in range(8)))
    assert sorted(p.node for p in placed if p) == ["n1", "n1", "n1", "n2", "n2", "n2"]
    assert placed.count(None) == 2
    await registry.forget(next(f"c{i}" for i, p in enumerate(placed) if p and p.node == "n2"))
    assert (await registry.usage())["n2"] == Usage(2 * GIB, 2.0, 2)


async def _lost_and_restarted(registry: FleetRegistry) -> None:
    await registry.seen([_node("n1"), _node("n2")])
    for i in range(4):
        await registry.place(f"c{i}", Need(GIB, 1.0, "x"), [_node("n1"), _node("n2")])
    on_n1 = [f"c{i}" for i in range(4) if (await registry.assignment(f"c{i}")) == Assignment("n1", "a")]
    assert await registry.lose("n1") == len(on_n1) == 2
    assert {(await registry.assignment(cid)).state for cid in on_n1} == {"lost"}  # type: ignore[union-attr]
    assert await registry.place("late", Need(GIB, 1.0, "x"), [_node("n1")]) is None  # not alive
    assert await registry.seen([_node("n1", incarnation="b"), _node("n2", incarnation="b")]) == 2  # n2 restarted
    assert (await registry.usage()) == {"n1": Usage(), "n2": Usage()}
    assert await registry.place("again", Need(GIB, 1.0, "x"), [_node("n1", incarnation="a")]) is None  # stale report
    assert await registry.place("again", Need(GIB, 1.0, "x"), [_node("n1", incarnation="b")]) == Assignment("n1", "b")
    assert [(n.node, n.alive, n.containers, n.lost) for n in await registry.status()] == [
        ("n1", True, 1, 2), ("n2", True, 0, 2)]
