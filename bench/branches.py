"""``make bench``: snapshots, forks and pause of containers, beside the same with disks copied block by block.

Two private servers on fresh data dirs: one with the reflink disk pool (``COVE_DISK_POOL=auto``, the
default) and one without (``off``: the alternative, a copy of every written block). Through HTTP with
one keep-alive client it times snapshot and fork (count 1) of a container that wrote nothing and of
one that wrote 1 GB, forks of 20 at once (per fork), pause + resume, the disk that 100 forks of the
1 GB container take, and a cold read of the 1 GB file in the container and in its 20th-generation
fork. Targets are reported, not asserted. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from containers import RESULTS_DIR, Bench, CoveServer, _terminate_as_exit, cove_server
from percentiles import p50_p95
from rich.console import Console
from rich.table import Table

IMAGE = "default"
GIB = 1 << 30
N_SNAPSHOT, N_FORK, N_COPY = 20, 20, 3
"""Samples per timed row (the block-copy server's 1 GB rows are slow: a few)."""
N_WIDE, N_DISK, GENERATIONS = 20, 100, 20
N_PAUSE = 50
TARGET_FORK_MS = 20.0
WRITE_1G = "dd if=/dev/urandom of=/root/big bs=1M count=1024 status=none && sync"
READ_1G = "dd if=/root/big of=/dev/null bs=1M status=none"

console = Console(width=None if sys.stdout.isatty() else 110)


def _run(bench: Bench, container_id: str, command: str) -> None:
    """``command`` in the container, which must succeed (writing or reading 1 GB takes seconds)."""
    output = bench.client.post(f"/v1/containers/{container_id}/exec", json={
        "commands": [command], "timeout_ms": 120_000}).raise_for_status().json()["output"][0]
    if output["outcome"] != {"type": "exit", "exit_code": 0}:
        raise RuntimeError(f"{command!r} ended with {output['outcome']}: {output['stderr']}")


def _fork(bench: Bench, container_id: str, count: int = 1) -> list[str]:
    answer = bench.client.post(f"/v1/containers/{container_id}/fork", json={"count": count}).raise_for_status()
    children = [child["id"] for child in answer.json()["data"]]
    bench.created.update(children)
    return children


def _timed(samples: int, step: Callable[[], Any], after: Callable[[Any], None] | None = None) -> list[float]:
    """``step()`` ``samples`` times, in ms each (``after(result)`` cleans up, untimed)."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        result = step()
        times.append((time.perf_counter() - started) * 1000)
        if after is not None:
            after(result)
    return times


def snapshot_times(bench: Bench, container_id: str, samples: int) -> list[float]:
    def take() -> str:
        answer = bench.client.post(f"/v1/containers/{container_id}/snapshots").raise_for_status()
        snapshot_id: str = answer.json()["id"]
        return snapshot_id
    return _timed(samples, take, lambda snapshot_id: bench.client.delete(f"/v1/snapshots/{snapshot_id}"))


def fork_times(bench: Bench, container_id: str, samples: int) -> dict[str, list[float]]:
    """Fork (count 1) with the children deleted unused; then forks whose child runs ``true`` (its
    processes start on first use) before it is deleted: the fork and that first command timed apart."""
    fork = _timed(samples, lambda: _fork(bench, container_id), lambda children: [bench.delete(c) for c in children])
    churn, first = [], []
    for _ in range(samples):
        started = time.perf_counter()
        child = _fork(bench, container_id)[0]
        forked = time.perf_counter()
        _run(bench, child, "true")
        churn.append((forked - started) * 1000)
        first.append((time.perf_counter() - forked) * 1000)
        bench.delete(child)
    return {"fork": fork, "fork_churn": churn, "first_exec": first}


def pause_resume_times(bench: Bench, container_id: str) -> dict[str, list[float]]:
    _run(bench, container_id, "(while true; do sleep 0.05; done) >/dev/null 2>&1 &")
    pause, resume = [], []
    for _ in range(N_PAUSE):
        pause += _timed(1, lambda: bench.client.post(f"/v1/containers/{container_id}/pause").raise_for_status())
        resume += _timed(1, lambda: bench.client.post(f"/v1/containers/{container_id}/resume").raise_for_status())
    return {"pause_ms": pause, "resume_ms": resume}


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def _pool_used(server: CoveServer) -> int:
    disks = os.statvfs(server.data_dir / "disks")
    return (disks.f_blocks - disks.f_bfree) * disks.f_frsize


def disk_of_forks(bench: Bench, container_id: str) -> dict[str, Any]:
    """What ``N_DISK`` forks of the 1 GB container add: in the pool, and on the host (the pool file)."""
    pool_file = bench.server.data_dir / "disks.xfs"
    before_pool, before_host = _pool_used(bench.server), _allocated(pool_file)
    started = time.perf_counter()
    children = _fork(bench, container_id, N_DISK)
    seconds = time.perf_counter() - started
    _run(bench, children[-1], "cmp /root/big /root/big")  # a child reads it whole
    after_pool, after_host = _pool_used(bench.server), _allocated(pool_file)
    for child in children:
        bench.delete(child)
    return {"forks": N_DISK, "seconds": seconds, "pool_bytes": after_pool - before_pool,
            "host_bytes": after_host - before_host}


def cold_read_ms(bench: Bench, container_id: str) -> float:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    started = time.perf_counter()
    _run(bench, container_id, READ_1G)
    return (time.perf_counter() - started) * 1000


def generations(bench: Bench, container_id: str) -> dict[str, Any]:
    """A fork of a fork ... ``GENERATIONS`` deep: how reads there compare with reads in the first."""
    chain = [container_id]
    for _ in range(GENERATIONS):
        chain.append(_fork(bench, chain[-1])[0])
        _run(bench, chain[-1], f"echo {len(chain)} >> /root/generations")  # each generation writes
    first = [cold_read_ms(bench, container_id) for _ in range(3)]
    last = [cold_read_ms(bench, chain[-1]) for _ in range(3)]
    for child in chain[1:]:
        bench.delete(child)
    return {"depth": GENERATIONS, "first_read_ms": first, "deep_read_ms": last}


def measure(server_env: dict[str, str], images_dir: Path, *, full: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with cove_server(images_dir, server_env) as bench:
        empty = bench.create("bench-empty")
        big = bench.create("bench-1g")
        _run(bench, big, WRITE_1G)
        samples = N_SNAPSHOT if full else N_COPY
        results["snapshot_1g_ms"] = snapshot_times(bench, big, samples)
        results["fork_1g_ms"] = fork_times(bench, big, samples)["fork"]
        if full:
            results["snapshot_0_ms"] = snapshot_times(bench, empty, N_SNAPSHOT)
            forks = fork_times(bench, empty, N_FORK)
            results["fork_0_ms"], results["fork_churn_0_ms"] = forks["fork"], forks["fork_churn"]
            results["first_exec_0_ms"] = forks["first_exec"]
            wide = _timed(3, lambda: _fork(bench, big, N_WIDE), lambda cs: [bench.delete(c) for c in cs])
            results["fork_wide_ms_per_fork"] = [ms / N_WIDE for ms in wide]
            results.update(pause_resume_times(bench, empty))
            results["disk"] = disk_of_forks(bench, big)
            results["generations"] = generations(bench, big)
    return results


def report(results: dict[str, Any]) -> None:
    reflink, copy = results["reflink"], results["copy"]
    table = Table(title="snapshots and forks (ms, p50 / p95)", title_justify="left")
    for column in ("row", "reflink pool", "block copy", "ratio", "target"):
        table.add_column(column)

    def cell(samples: list[float] | None) -> str:
        if not samples:
            return "-"
        p50, p95 = p50_p95(samples)
        return f"{p50:.1f} / {p95:.1f}"

    def ratio(ours: list[float], theirs: list[float] | None) -> str:
        return f"{p50_p95(theirs)[0] / p50_p95(ours)[0]:.0f}x" if theirs else ""

    def verdict(samples: list[float], target: float) -> str:
        return f"<= {target:g} ms: " + ("PASS" if p50_p95(samples)[0] <= target else "MISS")

    table.add_row("snapshot, 0 B written", cell(reflink["snapshot_0_ms"]), "-", "", "")
    table.add_row("snapshot, 1 GB written", cell(reflink["snapshot_1g_ms"]), cell(copy["snapshot_1g_ms"]),
                  ratio(reflink["snapshot_1g_ms"], copy["snapshot_1g_ms"]), "")
    table.add_row("fork (1), 0 B written", cell(reflink["fork_0_ms"]), "-", "",
                  verdict(reflink["fork_0_ms"], TARGET_FORK_MS))
    table.add_row("fork (1), 1 GB written", cell(reflink["fork_1g_ms"]), cell(copy["fork_1g_ms"]),
                  ratio(reflink["fork_1g_ms"], copy["fork_1g_ms"]), verdict(reflink["fork_1g_ms"], TARGET_FORK_MS))
    table.add_row("fork (1), 0 B, children used and deleted", cell(reflink["fork_churn_0_ms"]), "-", "",
                  verdict(reflink["fork_churn_0_ms"], TARGET_FORK_MS))
    table.add_row("first command in a fork (its start)", cell(reflink["first_exec_0_ms"]), "-", "", "")
    table.add_row(f"fork ({N_WIDE} at once), 1 GB, per fork", cell(reflink["fork_wide_ms_per_fork"]), "-", "",
                  verdict(reflink["fork_wide_ms_per_fork"], TARGET_FORK_MS))
    table.add_row("pause", cell(reflink["pause_ms"]), "-", "", "")
    table.add_row("resume", cell(reflink["resume_ms"]), "-", "", "")
    console.print(table)
    disk, deep = reflink["disk"], reflink["generations"]
    pool_mib, host_mib = disk["pool_bytes"] / (1 << 20), disk["host_bytes"] / (1 << 20)
    console.print(f"{disk['forks']} forks of the 1 GB container in {disk['seconds']:.2f} s: the pool grew by "
                  f"{pool_mib:.1f} MiB, the host's disk by {host_mib:.1f} MiB (one full copy is 1024 MiB)")
    first, last = p50_p95(deep["first_read_ms"])[0], p50_p95(deep["deep_read_ms"])[0]
    console.print(f"cold read of the 1 GB file: {first:.0f} ms in the container, {last:.0f} ms in its "
                  f"{deep['depth']}th-generation fork ({last / first:.2f}x; no layer stack, nothing to squash)")


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _terminate_as_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None).parse_args()
    images_dir = Path(os.environ.get("COVE_IMAGES_DIR") or "/var/lib/cove/images")
    if not (images_dir / "manifests" / f"{IMAGE}.json").exists():
        console.print(f"[red]no image {IMAGE!r} in {images_dir}: run `make image` first[/]")
        return 1
    with _signals():
        results = {"reflink": measure({"COVE_DISK_POOL": "auto"}, images_dir, full=True),
                   "copy": measure({"COVE_DISK_POOL": "off"}, images_dir, full=False)}
    report(results)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"branches-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1))
    console.print(f"raw samples: {path.relative_to(RESULTS_DIR.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
