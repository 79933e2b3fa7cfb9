"""``make bench``: the fleet at simulated scale, and what the hop through Ray adds to create and exec.

1. Simulated scale, no Ray: the registry (``service/fleet.py``) on a throwaway PostgreSQL places 10,000
   containers (1 GiB each, images mixed) on 20 simulated nodes from 8 concurrent placers, as replicas
   would: placement p50/p99, then registry queries (a container's node, usage, a check's ``seen``, a
   node's loss), and the memory a host's engine takes for its 500 simulated containers (tracemalloc).
   Afterwards no node holds more than its slots or memory.
2. With Ray (skip with ``--no-ray``): three nodes on 127.0.0.2-4 (the head is one), each with a
   ``SandboxHost`` on the simulated engine, placement on PostgreSQL; create and exec through
   ``FleetEngine`` beside the same engine called in process. The difference is the fleet's added
   latency (the container work on the node is the same code). With ``--real``, also a stream: a
   channel to ``cat`` in the container opened (through the node's relay on the fleet) and one byte
   echoed back and forth, as a terminal's keystrokes are. Then create throughput, 16 creates in
   flight, across the three nodes against the engine in process, in alternating rounds.

Targets are reported, not asserted (exec added p50 <= 2 ms). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

from percentiles import p50_p95
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cove.sandbox.base import Channel, Command, Limits, Sandbox, SandboxEngine  # noqa: E402
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
RAY_NODES = {"n1": "127.0.0.2", "n2": "127.0.0.3", "n3": "127.0.0.4"}
"""Three container nodes, the head one of them: Ray nodes on loopback only on 127.0.0.2-4 (127.0.0.1 is
rewritten to the machine's external address, ../shared/reference/scaleout-measurements.md)."""
THROUGHPUT_CREATES, IN_FLIGHT, THROUGHPUT_ROUNDS = 60, 16, 7
"""60 containers of 1 GiB per round: what fits in the memory the three simulated nodes report (each the
machine's, ~22 GiB), so a round measures creates, never a full fleet's 429."""
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


async def through_ray(table: Table, rounds: int, url: str, real: bool) -> None:
    from tests.conftest import IMAGES_DIR, data_dir
    from tests.ray_cluster import HEAD_IP, RayCluster

    dirs = {node: data_dir(f"cove-bench-{node}") for node in (*RAY_NODES, "local")}
    settings = {node: {"COVE_DATA_DIR": str(path), "COVE_IMAGES_DIR": str(IMAGES_DIR), "COVE_WARM_POOL": "0"}
                for node, path in dirs.items()}
    cluster = RayCluster()
    try:
        for index, (node, ip) in enumerate(RAY_NODES.items()):
            cluster.add(ip, {f"cove_host:{node}": 1, "cove_slots": 1000}, head=index == 0, env=settings[node])
        db = Database(url)
        await db.migrate()
        registry = FleetRegistry(db)
        factory = "cove.sandbox.fleet.host:linux_host" if real else "cove.testing.fleet:simulated_host"
        fleet = FleetEngine(registry, address=cluster.address, node_ip=HEAD_IP, call_timeout=30,
                            check_seconds=60, host_factory=factory)
        await fleet.start()
        while len(fleet.live) < len(RAY_NODES):  # nodes register with the head a moment after their raylets
            await asyncio.sleep(0.2)
            await fleet.check(60)
        local = _linux_engine(dirs["local"]) if real else SimulatedEngine("local")
        await local.start()
        try:
            await _compare(fleet, local, table, rounds, real)
            await _throughput(fleet, local, registry, table)
        finally:
            await local.close()
            await fleet.close()
            await db.close()
    finally:
        try:
            cluster.stop()
        finally:
            for path in dirs.values():  # what an engine left (runc state, mounts) goes as a restart clears it
                if real:
                    engine = _linux_engine(path)
                    await engine.start()
                    await engine.close()
                shutil.rmtree(path, ignore_errors=True)


def _linux_engine(path: Path) -> SandboxEngine:
    """The Linux engine on `path`, not a subreaper: the containers its nodes left must not become this
    process's children (unreaped, they would keep the cluster's remembered PIDs alive)."""
    from cove.config import Settings
    from cove.sandbox.images.store import ImageStore
    from cove.sandbox.linux.engine import LinuxEngine
    from tests.conftest import IMAGES_DIR

    settings = Settings(data_dir=path, images_dir=IMAGES_DIR, warm_pool=0)
    return LinuxEngine(settings, ImageStore(settings.image_root, settings.subuid_base), subreaper=False)


async def _echoes(sandbox: Sandbox, times: dict[tuple[str, str], list[float]], name: str) -> None:
    """A channel to ``cat`` opened, then one byte there and back 20 times (a keystroke's round trip)."""
    channel = await _timed(times.setdefault(("stream open", name), []), sandbox.channel(["cat"]))
    assert isinstance(channel, Channel)
    try:
        for _ in range(20):
            started = time.perf_counter()
            await channel.write(b"x")
            assert await channel.read() == b"x"
            times.setdefault(("stream echo", name), []).append((time.perf_counter() - started) * 1000)
    finally:
        await channel.close()


async def _compare(fleet: FleetEngine, local: SandboxEngine, table: Table, rounds: int, real: bool) -> None:
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
            if real:
                await _echoes(sandbox, times, name)  # type: ignore[arg-type]
            await _timed(times.setdefault(("destroy", name), []), engine.destroy(f"cntr_{name}{i:04}"))
    for op in ("create", "exec", "streaming exec", "stream open", "stream echo", "destroy"):
        if (op, "fleet") not in times:
            continue
        fleet_ms, local_ms = _p50(times[(op, "fleet")]), _p50(times[(op, "local")])
        note = f"target <= {TARGET_EXEC_ADDED_MS} ms" if op == "exec" else ""
        table.add_row(f"{op}: added by the fleet (p50 fleet {fleet_ms:.2f} - local {local_ms:.2f})",
                      f"{fleet_ms - local_ms:.2f}", f"{p99(times[(op, 'fleet')]):.2f}",
                      f"{len(times[(op, 'fleet')])} samples; {note}")


async def _creates_per_second(engine: SandboxEngine, names: list[str]) -> float:
    """Creates ``names``, ``IN_FLIGHT`` at a time."""
    todo = iter(names)

    async def creator() -> None:
        for name in todo:
            await engine.create(name, "default", Limits())

    started = time.perf_counter()
    await asyncio.gather(*(creator() for _ in range(IN_FLIGHT)))
    return len(names) / (time.perf_counter() - started)


async def _throughput(fleet: FleetEngine, local: SandboxEngine, registry: FleetRegistry, table: Table) -> None:
    """Create throughput of the fleet's nodes against one machine's engine in the same process, in
    alternating rounds (the same engine code on both sides: what differs is placement, the hop through
    Ray and, with ``--real``, three nodes' engines instead of one)."""
    rates: dict[str, list[float]] = {"fleet": [], "local": []}
    spread = ""
    for round_ in range(THROUGHPUT_ROUNDS):
        for name, engine in (("local", local), ("fleet", fleet)):
            names = [f"cntr_{name}{round_}_{i:05}" for i in range(THROUGHPUT_CREATES)]
            rates[name].append(await _creates_per_second(engine, names))
            if engine is fleet:
                usage = await registry.usage()
                spread = ", ".join(f"{node} {used.containers}" for node, used in sorted(usage.items()))
            for cid in names:
                await engine.destroy(cid)
    fleet_rate, local_rate = statistics.median(rates["fleet"]), statistics.median(rates["local"])
    table.add_row(f"create throughput: fleet, {len(RAY_NODES)} Ray nodes", "", "",
                  f"{fleet_rate:,.1f} containers/s; {IN_FLIGHT} in flight, median of {THROUGHPUT_ROUNDS} rounds of "
                  f"{THROUGHPUT_CREATES} (rounds {_rounded(rates['fleet'])}); per node {spread}")
    table.add_row("create throughput: one machine (engine in process)", "", "",
                  f"{local_rate:,.1f} containers/s (rounds {_rounded(rates['local'])}); fleet / one machine "
                  f"{fleet_rate / local_rate:.4f}")


def _rounded(rates: list[float]) -> str:
    return " ".join(f"{rate:,.1f}" for rate in rates)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-ray", action="store_true", help="Only the simulated scale (no cluster).")
    parser.add_argument("--no-scale", action="store_true", help="Only the comparison through Ray.")
    parser.add_argument("--rounds", type=int, default=100, help="Creates per engine through Ray.")
    parser.add_argument("--real", action="store_true",
                        help="Real containers: the nodes' hosts and the one machine run the Linux engine (runc).")
    args = parser.parse_args()
    table = Table(title="bench/fleet.py", title_justify="left")
    for column in ("what", "p50 ms", "p99 ms", "notes"):
        table.add_column(column)
    pg = PostgresServer().start()
    try:
        if not args.no_scale:
            await simulated_scale(pg.new_database(), table)
            await host_memory(table)
        if not args.no_ray:
            await through_ray(table, args.rounds, pg.new_database(), args.real)
    finally:
        pg.stop()
    console.print(table)


if __name__ == "__main__":
    asyncio.run(main())
