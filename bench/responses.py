"""Responses per second, and the latency Cove adds, in front of an upstream that answers at once.

A private ``cove serve`` (SQLite, ``store: true``) forwards to ``instant_upstream.py`` (Chat
Completions answering at once, in its own process). The load comes from this process: ``c`` clients
each sending ``POST /v1/responses`` back to back for a fixed time, plain and streamed. Added latency
is Cove's p50 at c=1 minus the upstream's own p50 called directly as Cove calls it (a streamed Chat
Completion read to its end), measured in the same run. When a
llama-stack server answers at ``LLAMASTACK_URL`` (default ``http://127.0.0.1:8321``; set one up with
``../shared/baselines/llamastack/RECIPE.sh``, model ``LLAMASTACK_MODEL``, default ``fake/fake-model``),
its Responses API gets the same load. Targets (issue 11): >= 300 responses/s at c=16, no errors at
c=64, <= 3 ms added p50, >= 3x llama-stack at c=16.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from containers import CoveServer
from percentiles import p50_p95
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONCURRENCY = (1, 16, 64)
DIRECT_SAMPLES = 300
console = Console()


@dataclass
class Load:
    done: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    """Why requests failed (status and the end of the body, or the client's exception), to be printed:
    an error count alone cannot be chased once the run is over."""

    @property
    def per_second(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, object], stream: bool) -> str | None:
    """None for a completed response, else why it failed."""
    if not stream:
        answer = await client.post(url, json=body)
        if answer.status_code == 200 and answer.json().get("status") == "completed":
            return None
        return f"{answer.status_code} {answer.text[-200:]}"
    async with client.stream("POST", url, json={**body, "stream": True}) as answer:
        text = b"".join([chunk async for chunk in answer.aiter_bytes()])
        if answer.status_code == 200 and b"response.completed" in text:
            return None
        return f"{answer.status_code} {text[-200:].decode(errors='replace')}"


async def load(url: str, body: dict[str, object], concurrency: int, stream: bool, seconds: float,
               headers: dict[str, str] | None = None) -> Load:
    """``concurrency`` clients sending back to back for ``seconds`` (after one warm-up request each)."""
    result = Load()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60, headers=headers) as client:
        await asyncio.gather(*(_one(client, url, body, stream) for _ in range(concurrency)))
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    failure = await _one(client, url, body, stream)
                except httpx.HTTPError as exc:
                    failure = repr(exc)
                if failure is None:
                    result.done += 1
                    result.latencies.append((time.monotonic() - started) * 1000)
                else:
                    result.errors += 1
                    result.failures[failure] += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.monotonic() - started
    return result


async def direct_p50(upstream: str, stream: bool) -> float:
    """The upstream's own latency, called directly (one keep-alive client). Streamed is the way Cove
    calls it, whether its own client asked for a stream or not: that is the one added latency is
    counted from. The plain call's p50 is printed too (runs before 2026-11-28 16:30 UTC used it)."""
    body = {"model": "instant", "messages": [{"role": "user", "content": "Say hello."}], "stream": stream,
            **({"stream_options": {"include_usage": True}} if stream else {})}
    async with httpx.AsyncClient(timeout=10) as client:
        samples = []
        for _ in range(DIRECT_SAMPLES):
            started = time.monotonic()
            async with client.stream("POST", f"{upstream}/chat/completions", json=body) as answer:
                answer.raise_for_status()
                await answer.aread()
            samples.append((time.monotonic() - started) * 1000)
    return p50_p95(samples)[0]


def start_upstream() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "instant_upstream.py"), str(port)])
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                return proc, url
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the instant upstream did not start")


def llamastack_url() -> str | None:
    url = os.environ.get("LLAMASTACK_URL", "http://127.0.0.1:8321")
    with contextlib.suppress(httpx.HTTPError):
        if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
            return url
    return None


async def measure(name: str, url: str, model: str, direct: float | None, table: Table) -> dict[str, Load]:
    body: dict[str, object] = {"model": model, "input": "Say hello.", "store": True}
    loads = {}
    for stream in (False, True):
        for concurrency in CONCURRENCY:
            result = await load(f"{url}/v1/responses", body, concurrency, stream, SECONDS)
            loads[f"{'stream' if stream else 'plain'}-{concurrency}"] = result
            p50, p95 = p50_p95(result.latencies) if result.latencies else (float("nan"), float("nan"))
            added = f"{p50 - direct:.1f}" if direct is not None and concurrency == 1 else ""
            table.add_row(name, "stream" if stream else "plain", str(concurrency), f"{result.per_second:.0f}",
                          str(result.errors), f"{p50:.1f}", f"{p95:.1f}", added)
    return loads


async def main() -> int:
    images = Path(os.environ.get("COVE_IMAGES_DIR", "/var/lib/cove/images"))
    upstream_proc, upstream = start_upstream()
    server = CoveServer(images, {"COVE_UPSTREAM_URL": upstream, "COVE_WARM_POOL": "0"})
    table = Table(title=f"Responses against an instant upstream ({SECONDS:g} s per row, store: true)")
    for column in ("server", "mode", "c", "responses/s", "errors", "p50 ms", "p95 ms", "added p50 ms"):
        table.add_column(column, justify="right" if column not in ("server", "mode") else "left")
    try:
        server.start()
        direct_plain = await direct_p50(upstream, stream=False)
        direct = await direct_p50(upstream, stream=True)
        cove = await measure("cove", server.url, "instant", direct, table)
        other = llamastack_url()
        baseline = None
        if other is not None:
            baseline = await measure("llama-stack", other, os.environ.get("LLAMASTACK_MODEL", "fake/fake-model"),
                                     None, table)
    finally:
        server.stop()
        upstream_proc.terminate()
        upstream_proc.wait(timeout=10)
    console.print(table)
    added = p50_p95(cove["plain-1"].latencies)[0] - direct
    rate, errors = cove["plain-16"].per_second, cove["plain-64"].errors + cove["stream-64"].errors
    console.print(f"upstream called directly: p50 {direct:.2f} ms streamed as Cove calls it (added latency is "
                  f"counted from this), {direct_plain:.2f} ms plain")
    console.print(f"c=16 plain: {rate:.0f} responses/s (target >= 300) {'PASS' if rate >= 300 else 'MISS'}; "
                  f"c=64 errors: {errors} {'PASS' if errors == 0 else 'MISS'}; "
                  f"added p50 at c=1: {added:.1f} ms (target <= 3) {'PASS' if added <= 3 else 'MISS'}")
    for name, result in cove.items():
        for failure, count in result.failures.most_common(5):
            console.print(f"failed ({name}, {count}x): {failure}", markup=False)
    if baseline is not None:
        ratio = rate / max(baseline["plain-16"].per_second, 1e-9)
        console.print(f"vs llama-stack at c=16 plain: {ratio:.1f}x (target >= 3x) {'PASS' if ratio >= 3 else 'MISS'}")
    else:
        console.print("llama-stack: not running (see ../shared/baselines/llamastack/RECIPE.sh); no ratio")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
