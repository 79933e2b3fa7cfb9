"""How long the web console's pages take with 1,000 responses in the project (target: <= 300 ms each).

A private ``cove serve`` (SQLite) forwards to ``instant_upstream.py``; 1,000 stored responses are made
through the API, then a signed-in client fetches each page in alternating rounds: the responses list
(first page, and a page 500 responses deep by its cursor), a response's trajectory, the
conversations and containers lists. Wall time per page (p50, p95) and the server's CPU per page
(utime+stime from /proc, far less noisy than wall time on a shared machine; a mean, since
/proc counts in 10 ms ticks). Targets are reported,
never asserted.

    PYTHONPATH=src .venv/bin/python bench/console.py [--responses 1000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
from containers import CoveServer
from responses import start_upstream
from rich.console import Console
from rich.table import Table

TARGET_MS = 300.0
console = Console()


async def make_responses(url: str, count: int) -> list[str]:
    """``count`` stored responses, eight at a time; their ids, oldest first."""
    ids: list[str] = [""] * count
    queue = iter(range(count))
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async def worker() -> None:
            for index in queue:
                answer = await client.post("/v1/responses", json={
                    "model": "instant", "input": f"Say hello, number {index}.", "store": True})
                answer.raise_for_status()
                ids[index] = answer.json()["id"]

        await asyncio.gather(*(worker() for _ in range(8)))
    return ids


def measure(server: CoveServer, client: httpx.Client, paths: dict[str, str], rounds: int) -> dict[str, list[float]]:
    """Each page once per round, in turn, so a busy moment of the machine hits them alike; wall ms and
    server CPU ms per fetch."""
    samples: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            before = server.cpu_seconds()
            started = time.perf_counter()
            answer = client.get(path)
            samples[name].append((time.perf_counter() - started) * 1000)
            cpu[name].append((server.cpu_seconds() - before) * 1000)
            if answer.status_code != 200 or "<html" not in answer.text:
                raise RuntimeError(f"{path} answered {answer.status_code}: {answer.text[:300]}")
    return {**{f"wall {k}": v for k, v in samples.items()}, **{f"cpu {k}": v for k, v in cpu.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--responses", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    images = Path(os.environ.get("COVE_IMAGES_DIR", "/var/lib/cove/images"))
    upstream_proc, upstream = start_upstream()
    server = CoveServer(images, {"COVE_UPSTREAM_URL": upstream})
    try:
        server.start()
        started = time.perf_counter()
        ids = asyncio.run(make_responses(server.url, args.responses))
        console.print(f"{len(ids)} responses made in {time.perf_counter() - started:.1f} s")
        with httpx.Client(base_url=server.url, timeout=60) as client:
            signed = client.post("/console/login", data={"key": "bench"}, headers={"Origin": server.url})
            if signed.status_code != 303:
                raise RuntimeError(f"sign-in answered {signed.status_code}: {signed.text[:300]}")
            paths = {"responses, first page": "/console/responses",
                     "responses, 500 deep": f"/console/responses?after={ids[len(ids) // 2]}",
                     "a trajectory": f"/console/responses/{ids[-1]}",
                     "conversations": "/console/conversations", "containers": "/console/containers"}
            results = measure(server, client, paths, args.rounds)
    finally:
        server.stop()
        upstream_proc.kill()
        upstream_proc.wait()
    table = Table(title=f"console pages, {args.responses} responses in the project, {args.rounds} rounds")
    for column in ("page", "wall p50 ms", "wall p95 ms", "server CPU mean ms", f"target <= {TARGET_MS:.0f} ms"):
        table.add_column(column)
    for name in paths:
        wall, cpu = sorted(results[f"wall {name}"]), results[f"cpu {name}"]
        p50, p95 = statistics.median(wall), wall[min(len(wall) - 1, int(len(wall) * 0.95))]
        table.add_row(name, f"{p50:.1f}", f"{p95:.1f}", f"{statistics.fmean(cpu):.1f}",
                      "PASS" if p95 <= TARGET_MS else "MISS")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
