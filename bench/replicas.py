"""Responses per second of two ``cove serve`` replicas sharing one PostgreSQL against one replica on it.

Issue 16 ("Measured"): 2 replicas' responses/s vs 1, target >= 1.7x on the same upstream. One
PostgreSQL (``tests/postgres.py``), one database, one ``instant_upstream.py`` (Chat Completions that
answer at once), two replicas A and B on that database with one secrets key (``docs/replicas.md``).
Both replicas run for the whole bench; a round measures "one" (all ``c`` clients on A, B idle) and
"two" (``c/2`` clients on A and ``c/2`` on B at once) for ``BENCH_SECONDS`` each, the order
alternating from round to round so a drift of the shared machine's load falls on both. Requests are
the load generator of ``bench/responses.py`` (plain ``POST /v1/responses``, ``store: true``).

The ratio is the median of "two" over the median of "one". Both cannot be more than the cores the
machine has: the bench also prints how much CPU each part (the replicas, the upstream, PostgreSQL,
this load generator, and every other process on the machine) used per second of each window, and the
load average, so a ratio below target says where the cores went. Beside it, an estimate from CPU time
(far less noisy than rates on a shared machine): the replicas' CPU per response with one and with
two, which is what the ratio would be with a core for each replica. Targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from containers import CoveServer
from percentiles import p50_p95
from responses import load, start_upstream
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.postgres import PostgresServer  # noqa: E402

TARGET = 1.7
CGROUP_ROOT = Path("/sys/fs/cgroup")
TICK = os.sysconf("SC_CLK_TCK")
console = Console(width=max(Console().width, 150))


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_cpu_seconds(root: int) -> float:
    """utime + stime + reaped children's of ``root`` and every live descendant: PostgreSQL's backends are
    children of the postmaster, itself under ``runuser``. A backend that exits moves its time into its
    parent's reaped counters, so the sum stays continuous."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grown = {root}, True
    while grown:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grown = bool(more)
    total = 0
    for pid in tree:
        try:
            total += sum(int(field) for field in _stat(pid)[11:15])
        except (OSError, IndexError, ValueError):
            continue  # exited between the listing and now: its time is in its parent's reaped counters
    return total / TICK


class CpuCap:
    """A cgroup that holds one process (and what it starts) to ``cpus`` CPUs, as a machine of its own with
    that many cores would: cgroup v2's ``cpu.max``, else v1's CFS quota. Removed once its process ended."""

    PERIOD_US = 100_000

    def __init__(self, name: str, cpus: float) -> None:
        unified = (CGROUP_ROOT / "cgroup.controllers").exists()
        self.dir = CGROUP_ROOT / name if unified else CGROUP_ROOT / "cpu" / name
        self.dir.mkdir()
        quota = int(cpus * self.PERIOD_US)
        if unified:
            (self.dir / "cpu.max").write_text(f"{quota} {self.PERIOD_US}")
        else:
            (self.dir / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
            (self.dir / "cpu.cfs_quota_us").write_text(str(quota))

    def add(self, pid: int) -> None:
        (self.dir / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.dir.rmdir()


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy so far (every process, ours or not), from ``/proc/stat``."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK  # all but idle and iowait


@dataclass
class Window:
    """One mode's measurement in one round."""

    mode: str
    rate: float
    errors: int
    p50_ms: float
    cores: dict[str, float]
    """CPU seconds per wall second of each part during the window (1.0 = one core busy)."""
    load_average: float

    @property
    def cove_cpu_ms(self) -> float:
        """The replicas' CPU per response: far steadier than the rate on a machine others use."""
        return self.cores["replicas"] / self.rate * 1000 if self.rate else float("nan")


class Parts:
    """The processes whose CPU is accounted: the replicas, the upstream, PostgreSQL, this process."""

    def __init__(self, replica_pids: list[int], upstream_pid: int, postgres_pid: int) -> None:
        self.replica_pids, self.upstream_pid, self.postgres_pid = replica_pids, upstream_pid, postgres_pid

    def sample(self) -> dict[str, float]:
        own = time.process_time()  # first: the /proc scans below are the bench's, not the load's
        return {"load generator": own, "replicas": sum(tree_cpu_seconds(pid) for pid in self.replica_pids),
                "upstream": tree_cpu_seconds(self.upstream_pid), "postgres": tree_cpu_seconds(self.postgres_pid),
                "machine busy": machine_busy_seconds()}


async def measure(mode: str, urls: list[str], concurrency: int, seconds: float, parts: Parts) -> Window:
    """``concurrency`` clients split evenly over ``urls``, all sending back to back for ``seconds``."""
    body: dict[str, object] = {"model": "instant", "input": "Say hello.", "store": True}
    share = concurrency // len(urls)
    before, started = parts.sample(), time.monotonic()
    loads = await asyncio.gather(*(load(f"{url}/v1/responses", body, share, False, seconds) for url in urls))
    wall = time.monotonic() - started
    after = parts.sample()
    latencies = [latency for result in loads for latency in result.latencies]
    cores = {name: (after[name] - before[name]) / wall for name in after}
    cores["others"] = cores["machine busy"] - sum(cores[name] for name in before if name != "machine busy")
    return Window(mode=mode, rate=sum(result.per_second for result in loads),
                  errors=sum(result.errors for result in loads),
                  p50_ms=p50_p95(latencies)[0] if latencies else float("nan"), cores=cores,
                  load_average=os.getloadavg()[0])


def median(windows: list[Window], mode: str, value: str) -> float:
    return float(statistics.median(getattr(window, value) for window in windows if window.mode == mode))


def median_cores(windows: list[Window], mode: str, part: str) -> float:
    return statistics.median(window.cores[part] for window in windows if window.mode == mode)


async def run(replicas: list[CoveServer], parts: Parts, rounds: int, seconds: float, concurrency: int) -> int:
    urls = {"one": [replicas[0].url], "two": [replica.url for replica in replicas]}
    for mode in ("one", "two"):  # warm-up: connections, the store's pools, the servers' first requests
        await measure(mode, urls[mode], concurrency, min(seconds, 1.0), parts)
    windows: list[Window] = []
    for number in range(rounds):
        for mode in ("one", "two") if number % 2 == 0 else ("two", "one"):
            windows.append(await measure(mode, urls[mode], concurrency, seconds, parts))
    parts_shown = ("replicas", "upstream", "postgres", "load generator", "others", "machine busy")
    table = Table(title=f"{concurrency} clients, plain POST /v1/responses (store: true), {seconds:g} s per window, "
                        f"{os.cpu_count()} cores; CPU columns in cores busy during the window")
    for column in ("round", "replicas", "resp/s", "errors", "p50 ms", "cove CPU ms/resp", "cove", "upstream",
                   "postgres", "load gen", "others", "machine", "load avg"):
        table.add_column(column, justify="left" if column == "replicas" else "right", no_wrap=True)
    for index, window in enumerate(windows):
        table.add_row(str(index // 2 + 1), window.mode, f"{window.rate:.0f}", str(window.errors),
                      f"{window.p50_ms:.1f}", f"{window.cove_cpu_ms:.2f}",
                      *(f"{window.cores[part]:.2f}" for part in parts_shown),
                      f"{window.load_average:.2f}")
    console.print(table)
    one, two = median(windows, "one", "rate"), median(windows, "two", "rate")
    ratio = two / one if one else float("nan")
    for mode, rate in (("one", one), ("two", two)):
        console.print(f"{mode} replica{'s' if mode == 'two' else ''}: median {rate:.0f} responses/s, "
                      f"p50 {median(windows, mode, 'p50_ms'):.1f} ms, "
                      + ", ".join(f"{part} {median_cores(windows, mode, part):.2f}" for part in parts_shown)
                      + f" cores; {median(windows, mode, 'cove_cpu_ms'):.2f} ms of replica CPU per response")
    errors = sum(window.errors for window in windows)
    one_cpu, two_cpu = (median(windows, mode, "cove_cpu_ms") for mode in ("one", "two"))
    console.print(f"by CPU time (a replica is one event loop, at most one core): with a core for each replica and "
                  f"the rest elsewhere, 2 replicas would give 2 x {one_cpu:.2f} / {two_cpu:.2f} = "
                  f"{2 * one_cpu / two_cpu:.2f}x (an estimate from the CPU per response above, not a measured rate)")
    console.print(f"2 replicas vs 1: {ratio:.2f}x (target >= {TARGET}x) {'PASS' if ratio >= TARGET else 'MISS'}; "
                  f"errors {errors}; load average (1, 5, 15 min) now "
                  + ", ".join(f"{value:.2f}" for value in os.getloadavg()))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "5")))
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", "4")))
    parser.add_argument("--concurrency", type=int, default=16, help="clients in all, split evenly over the replicas")
    parser.add_argument("--replica-cpus", type=float, default=None,
                        help="hold each replica to this many CPUs (a cgroup each), as if each had a machine of "
                             "that size: on a machine with fewer cores than the replicas, the upstream, PostgreSQL "
                             "and the clients need, this measures the replicas' scaling rather than the machine")
    args = parser.parse_args()
    images = Path(os.environ.get("COVE_IMAGES_DIR", "/var/lib/cove/images"))
    shared = Path(tempfile.mkdtemp(prefix="cove-bench-replicas-", dir="/var/tmp"))
    postgres = PostgresServer().start()
    upstream_proc, upstream = start_upstream()
    replicas: list[CoveServer] = []
    caps: list[CpuCap] = []
    try:
        database = postgres.new_database()
        for name in ("a", "b"):  # one after the other: the second finds the schema migrated
            replica = CoveServer(images, {"COVE_UPSTREAM_URL": upstream, "COVE_WARM_POOL": "0",
                                          "COVE_DATABASE_URL": database, "COVE_REPLICA_ID": f"bench-{name}",
                                          "COVE_SECRETS_KEY_FILE": str(shared / "secrets.key")})
            replicas.append(replica)
            replica.start()
            if args.replica_cpus is not None and replica.proc is not None:
                caps.append(CpuCap(f"cove-bench-{name}-{os.getpid()}", args.replica_cpus))
                caps[-1].add(replica.proc.pid)
        assert postgres.proc is not None and all(replica.proc is not None for replica in replicas)
        parts = Parts([replica.proc.pid for replica in replicas if replica.proc is not None], upstream_proc.pid,
                      postgres.proc.pid)
        if args.replica_cpus is not None:
            console.print(f"each replica held to {args.replica_cpus:g} CPUs (a cgroup each)")
        return asyncio.run(run(replicas, parts, args.rounds, args.seconds, args.concurrency))
    finally:
        for replica in replicas:
            replica.stop()
        for cap in caps:
            cap.remove()
        upstream_proc.terminate()
        upstream_proc.wait(timeout=10)
        postgres.stop()
        (shared / "secrets.key").unlink(missing_ok=True)
        shared.rmdir()


if __name__ == "__main__":
    sys.exit(main())
