"""``make bench``: the fleet at simulated scale, and what the hop through Ray adds to create and exec.

1. Simulated scale, no Ray: the registry (``service/fleet.py``) on a throwaway PostgreSQL places 10,000
   containers (1 GiB each, images mixed) on 20 simulated nodes from 8 concurrent placers, as replicas
   would: placement p50/p99, then registry queries (a container's node, usage, a check's ``seen``, a
   node's loss), and the memory a host's engine takes for its 500 simulated containers (tracemalloc).
   Afterwards no node holds more than its slots or memory.
2. With Ray (skip with ``--no-ray``): a head and one node on 127.0.0.2-3, a ``SandboxHost`` on the
   simulated engine; create and exec through ``FleetEngine`` beside the same engine called in process.
   The difference is the fleet's added latency (the container work on the node is the same code).

Targets are reported, not asserted (exec added p50 <= 2 ms). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from percentiles import p50_p95
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cove.sandbox.base import Command, Limits  # noqa: E402
from cove.sandbox.fleet.engine import FleetEngine  # noqa: E402
from cove.sandbox.fleet.placement import Need, NodeReport  # noqa: E402
from cove.service.fleet import FleetRegistry  # noqa: E402
from cove.store.db import Database  # noqa: E402
from cove.testing.fleet import SimulatedEngine  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402

GIB = 1 << 30
NODES, CONTAINERS, PLACERS = 20, 10_000, 8
SLOTS = 600
TARGET_EXEC_ADDED_MS = 2.0
console = Console(width=None if sys.stdout.isatty() else 110)


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _reports() -> list[NodeReport]:
    images = ("default", "python", "node")
    return [NodeReport(f"node{i:02}", "inc0", 640 * GIB, 64.0, SLOTS,
                       frozenset(image for j, image in enumerate(images) if i % (j + 2) == 0))
            for i in range(NODES)]


async def _timed(samples: list[float], work: asyncio.Future[object] | object) -> object:
    started = time.perf_counter()
    result = await work  # type: ignore[misc]
    samples.append((time.perf_counter() - started) * 1000)
    return result


async def simulated_scale(url: str, table: Table) -> None:
    db = Database(url)
    await db.migrate()
    registry = FleetRegistry(db)
    reports = _reports()
    await registry.seen(reports)
    place_ms: list[float] = []
    ids = [f"cntr_{i:05}" for i in range(CONTAINERS)]
    queue = list(ids)
    rng = random.Random(16)

    for placers, share in ((1, CONTAINERS // 10), (PLACERS, CONTAINERS - CONTAINERS // 10)):
        place_ms.clear()
        stop_at = len(queue) - share
        started = time.perf_counter()

        async def placer(stop_at: int = stop_at) -> None:
            while len(queue) > stop_at:
                cid = queue.pop()
                need = Need(GIB, 1.0, rng.choice(("default", "python", "node", "other")))
                placed = await _timed(place_ms, registry.place(cid, need, reports))
                assert placed is not None

        await asyncio.gather(*(placer() for _ in range(placers)))
        wall = time.perf_counter() - started
        table.add_row(f"place {share:,} on {NODES} nodes, {placers} placer(s)", f"{_p50(place_ms):.2f}",
                      f"{p99(place_ms):.2f}", f"{share / wall:,.0f} placements/s")
    usage = await registry.usage()
    worst = max(used.containers for used in usage.values())
    assert all(used.containers <= SLOTS and used.memory <= 640 * GIB for used in usage.values())
    table.add_row("  containers per node (min-max)", "", "",
                  f"{min(u.containers for u in usage.values())}-{worst}, none over {SLOTS} slots")

    lookup_ms: list[float] = []
    for cid in rng.sample(ids, 1000):
        await _timed(lookup_ms, registry.assignment(cid))
    table.add_row("registry: a container's node", f"{_p50(lookup_ms):.2f}", f"{p99(lookup_ms):.2f}", "1,000 lookups")
    for label, work in (("registry: usage of every node", registry.usage),
                        ("registry: a check's seen (20 nodes)", lambda: registry.seen(reports)),
                        ("registry: status (cove fleet status)", registry.status)):
        samples: list[float] = []
        for _ in range(20):
            await _timed(samples, work())
        table.add_row(label, f"{_p50(samples):.2f}", f"{p99(samples):.2f}", "20 runs")
    lose_ms: list[float] = []
    lost = await _timed(lose_ms, registry.lose("node00"))
    table.add_row("registry: a node lost", f"{lose_ms[0]:.2f}", "", f"{lost} containers marked lost")
    await db.close()


async def host_memory(table: Table) -> None:
    engine = SimulatedEngine("node00")
    per_host = CONTAINERS // NODES
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(per_host):
        await engine.create(f"cntr_{i:05}", "default", Limits())
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    table.add_row(f"host engine bookkeeping, {per_host} containers", "", "",
                  f"{(after - before) / 2**20:.2f} MiB ({(after - before) / per_host:,.0f} B each)")


def _p50(samples: list[float]) -> float:
    return p50_p95(samples)[0]


async def through_ray(table: Table, rounds: int) -> None:
    from tests.ray_cluster import HEAD_IP, RayCluster

    cluster = RayCluster()
    try:
        cluster.add(HEAD_IP, head=True)
        cluster.add("127.0.0.3", {"cove_host:n1": 1, "cove_slots": 1000})
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite+aiosqlite:///{tmp}/fleet.db")
            await db.migrate()
            fleet = FleetEngine(FleetRegistry(db), address=cluster.address, node_ip=HEAD_IP, call_timeout=10,
                                check_seconds=60, host_factory="cove.testing.fleet:simulated_host")
            await fleet.start()
            while not fleet.live:  # the node registers with the head a moment after its raylet starts
                await asyncio.sleep(0.2)
                await fleet.check(60)
            try:
                await _compare(fleet, table, rounds)
            finally:
                await fleet.close()
                await db.close()
    finally:
        cluster.stop()


async def _compare(fleet: FleetEngine, table: Table, rounds: int) -> None:
    local = SimulatedEngine("local")
    command = Command("echo hi", 10_000, 10_000)
    times: dict[tuple[str, str], list[float]] = {}
    for i in range(rounds):  # alternating, so that the machine's noise falls on both alike
        for name, engine in (("fleet", fleet), ("local", local)):
            sandbox = await _timed(times.setdefault(("create", name), []),
                                   engine.create(f"cntr_{name}{i:04}", "default", Limits()))
            for _ in range(5):
                await _timed(times.setdefault(("exec", name), []), sandbox.exec(command))  # type: ignore[attr-defined]
            await _timed(times.setdefault(("streaming exec", name), []),
                         sandbox.exec(command, lambda _stream, _text: None))  # type: ignore[attr-defined]
            await _timed(times.setdefault(("destroy", name), []), engine.destroy(f"cntr_{name}{i:04}"))
    for op in ("create", "exec", "streaming exec", "destroy"):
        fleet_ms, local_ms = _p50(times[(op, "fleet")]), _p50(times[(op, "local")])
        note = f"target <= {TARGET_EXEC_ADDED_MS} ms" if op == "exec" else ""
        table.add_row(f"{op}: added by the fleet (p50 fleet {fleet_ms:.2f} - local {local_ms:.2f})",
                      f"{fleet_ms - local_ms:.2f}", f"{p99(times[(op, 'fleet')]):.2f}",
                      f"{len(times[(op, 'fleet')])} samples; {note}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-ray", action="store_true", help="Only the simulated scale (no cluster).")
    parser.add_argument("--no-scale", action="store_true", help="Only the comparison through Ray.")
    parser.add_argument("--rounds", type=int, default=100, help="Creates per engine through Ray.")
    args = parser.parse_args()
    table = Table(title="bench/fleet.py", title_justify="left")
    for column in ("what", "p50 ms", "p99 ms", "notes"):
        table.add_column(column)
    if not args.no_scale:
        pg = PostgresServer().start()
        try:
            await simulated_scale(pg.new_database(), table)
        finally:
            pg.stop()
        await host_memory(table)
    if not args.no_ray:
        await through_ray(table, args.rounds)
    console.print(table)


if __name__ == "__main__":
    asyncio.run(main())
