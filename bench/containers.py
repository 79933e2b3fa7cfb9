"""``make bench``: Cove's container latency, burst and idle-memory numbers, beside Docker's from the same run.

It starts a private Cove server on a fresh data dir, measures through HTTP with one keep-alive
client (connection set-up is never timed), prints medians/p95 and PASS/MISS per target, and writes
the raw samples to ``bench/results/``. Targets are reported, not asserted: the exit code is 0
unless something fails. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import docker_baseline
import floor
import httpx
from percentiles import p50_p95
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
IMAGE = "default"
CGROUP_ROOT = Path("/sys/fs/cgroup")
MIB = 1 << 20
KEEPALIVE_S = 3.0
"""Below uvicorn's 5 s keep-alive, so a pooled connection is never reused just as the server
closes it (that race shows up as an httpx.ReadError in the burst)."""

N_FIRST, WARM_FIRST = 30, 3
N_EXEC, WARM_EXEC = 200, 20
N_BURST, BURST_ROUNDS = 100, 3
N_IDLE, IDLE_SETTLE_S = 200, 2.0
N_DOCKER_RUN, N_DOCKER_EXEC, WARM_DOCKER = 20, 50, 2
N_FLOOR, WARM_FLOOR = 20, 2
STREAM_BYTES = 100_000_000
SETTLE_WINDOW_S, SETTLE_IDLE, SETTLE_MAX_S = 1.0, 0.05, 120.0
"""(e) starts once the server used at most 5% of a CPU over a second (the burst's pool refill is done)."""
N_MANY, MANY_STEP = 2000, 100
MANY_SERVER_ENV = {"COVE_MAX_CONTAINERS": str(4 * N_MANY)}
"""A project may run a quarter of the server's cap: this lets the bench's project run ``N_MANY``."""

TARGET_FIRST_MS = 10.0
TARGET_COLD_MS = 40.0
TARGET_EXEC_MS = 2.0
TARGET_EXEC_P95_MS = 3.0
TARGET_BURST_S = 1.0
TARGET_IDLE_MIB = 10.0
TARGET_STREAM_MB_S = 200.0
TARGET_MANY_RSS_MIB = 2.0
"""Server RSS growth per ``MANY_STEP`` idle containers."""
TARGET_RUN_RATIO = 5.0
TARGET_EXEC_RATIO = 10.0

KERNEL_ONLY_FIELDS = ("SUnreclaim", "KernelStack", "PageTables", "Percpu")
KERNEL_FIELDS = ("AnonPages", "Shmem", *KERNEL_ONLY_FIELDS)
"""/proc/meminfo fields printed for (d): where the host-side memory went."""

console = Console(width=None if sys.stdout.isatty() else 110)
T = TypeVar("T")


def stats(samples: list[float]) -> dict[str, float]:
    p50, p95 = p50_p95(samples)
    return {"n": len(samples), "p50": p50, "p95": p95, "min": min(samples), "max": max(samples)}


# -- the server under test --------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _mounts_under(path: Path) -> list[str]:
    prefix = f"{path}/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [point for point in points if point == str(path) or point.startswith(prefix)]


class CoveServer:
    """``cove serve`` on a fresh data dir and free port; stopped and removed on exit."""

    def __init__(self, images_dir: Path, env: dict[str, str] | None = None) -> None:
        self.images_dir = images_dir
        self.extra_env = env or {}
        self.data_dir = Path(tempfile.mkdtemp(prefix="cove-bench-", dir="/var/tmp"))  # private: runc uses the gate
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cove = ROOT / ".venv" / "bin" / "cove"
        env = {**os.environ, "COVE_DATA_DIR": str(self.data_dir), "COVE_IMAGES_DIR": str(self.images_dir),
               "COVE_API_KEYS": "", **self.extra_env}
        with self.log_path.open("wb") as log:
            # Own session: a Ctrl-C reaches the bench only, which then cleans up in order.
            self.proc = subprocess.Popen(
                [str(cove if cove.exists() else "cove"), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cove serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cove serve did not become healthy in 60 s:\n{self.log_tail()}")
            time.sleep(0.1)

    def runtime_id(self, container_id: str) -> str:
        """The name runc and the cgroups know: a warm-pool container keeps its pool name."""
        return (self.data_dir / "containers" / container_id).resolve().name

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def rss_bytes(self) -> int:
        """The server process's resident memory, for the idle-memory breakdown."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """CPU the server and its reaped children (runc) have used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def settle(self) -> float:
        """Waits until the server has been nearly idle for ``SETTLE_WINDOW_S`` (at most ``SETTLE_MAX_S``);
        returns how long that took. After the burst the warm pool refills towards the demand the burst
        showed, and shrinks as it decays: dozens of container starts and removals that take both cores."""
        started = time.perf_counter()
        while time.perf_counter() - started < SETTLE_MAX_S:
            before = self.cpu_seconds()
            time.sleep(SETTLE_WINDOW_S)
            if self.cpu_seconds() - before <= SETTLE_IDLE * SETTLE_WINDOW_S:
                break
        return time.perf_counter() - started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.returncode not in (0, -signal.SIGTERM):
            console.print(f"[yellow]cove serve exited with {self.proc.returncode}:[/]\n{self.log_tail()}")
        leftover = _mounts_under(self.data_dir)
        if leftover:  # never rmtree through a mount
            console.print(f"[red]mounts left under {self.data_dir}, not removing it:[/] {leftover}")
            return
        shutil.rmtree(self.data_dir, ignore_errors=True)


# -- measurements -----------------------------------------------------------------------------------

@dataclass
class Bench:
    """Everything that talks to the server; every container made is remembered so it can be deleted."""

    server: CoveServer
    client: httpx.Client
    created: set[str]

    def create(self, name: str) -> str:
        response = self.client.post("/v1/containers", json={"name": name, "image": IMAGE})
        response.raise_for_status()
        container_id: str = response.json()["id"]
        self.created.add(container_id)
        return container_id

    def exec(self, container_id: str, command: str) -> dict[str, Any]:
        response = self.client.post(f"/v1/containers/{container_id}/exec",
                                    json={"commands": [command], "timeout_ms": 10_000})
        response.raise_for_status()
        output: dict[str, Any] = response.json()["output"][0]
        return output

    def delete(self, container_id: str) -> None:
        self.client.delete(f"/v1/containers/{container_id}").raise_for_status()
        self.created.discard(container_id)

    def first_output(self) -> dict[str, Any]:
        """(a) POST /v1/containers, then exec ``echo hi``: wall time until the output is back."""
        total, create_ms = [], []
        for i in range(WARM_FIRST + N_FIRST):
            started = time.perf_counter()
            response = self.client.post("/v1/containers", json={"name": f"bench-a-{i}", "image": IMAGE})
            created = time.perf_counter()
            response.raise_for_status()
            container_id = response.json()["id"]
            self.created.add(container_id)
            output = self.client.post(f"/v1/containers/{container_id}/exec",
                                      json={"commands": ["echo hi"], "timeout_ms": 10_000})
            done = time.perf_counter()
            output.raise_for_status()
            stdout = output.json()["output"][0]["stdout"]
            if stdout != "hi\n":
                raise RuntimeError(f"echo hi printed {stdout!r}")
            self.delete(container_id)
            if i >= WARM_FIRST:
                total.append((done - started) * 1000)
                create_ms.append((created - started) * 1000)
        return {"total_ms": total, "create_ms": create_ms,
                "first_exec_ms": [t - c for t, c in zip(total, create_ms, strict=True)]}

    def warm_exec(self) -> dict[str, Any]:
        """(b) exec ``true`` in a running container, after a warm-up: through ``httpx`` (the ``openai`` SDK's
        transport), and, alternating with it, through the standard library's ``http.client``, whose own
        CPU is a fraction of httpx's: on these 2 cores the client's work is in the wall time, and the
        second row shows how much of it is the client's rather than the server's."""
        container_id = self.create("bench-b")
        lean = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        body = json.dumps({"commands": ["true"], "timeout_ms": 10_000})
        path = f"/v1/containers/{container_id}/exec"

        def via_http_client() -> dict[str, Any]:
            lean.request("POST", path, body, {"Content-Type": "application/json"})
            response = lean.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"exec answered {response.status}: {data[:200]!r}")
            output: dict[str, Any] = json.loads(data)["output"][0]
            return output

        samples: dict[str, list[float]] = {"exec_ms": [], "lean_exec_ms": []}
        for i in range(WARM_EXEC + N_EXEC):
            for key, run in (("exec_ms", lambda: self.exec(container_id, "true")), ("lean_exec_ms", via_http_client)):
                started = time.perf_counter()
                output = run()
                elapsed = (time.perf_counter() - started) * 1000
                if output["outcome"] != {"type": "exit", "exit_code": 0}:
                    raise RuntimeError(f"true ended with {output['outcome']}")
                if i >= WARM_EXEC:
                    samples[key].append(elapsed)
        lean.close()
        self.delete(container_id)
        return samples

    async def burst(self, rounds_wanted: int = BURST_ROUNDS) -> dict[str, Any]:
        """(c) 100 agents each creating a container at once, each with its own client and connection
        (opened before the clock starts), as 100 agents would be. One client for all 100 would measure
        httpx: its connection pool looks at every connection for every request it assigns, and in one
        round it spent 1.7 s of CPU on 2 cores (0.1 s with a client per agent). Each round meets the warm
        pool as the creates before it left it (``pool_demand.py``)."""
        rounds = []
        for round_no in range(rounds_wanted):
            agents = [httpx.AsyncClient(base_url=self.server.url, timeout=120,
                                        limits=httpx.Limits(max_connections=1, keepalive_expiry=KEEPALIVE_S))
                      for _ in range(N_BURST)]
            try:
                await asyncio.gather(*(agent.get("/healthz") for agent in agents))
                latencies: list[float] = []

                async def one(agent: httpx.AsyncClient, i: int, round_no: int = round_no,
                              latencies: list[float] = latencies) -> httpx.Response:
                    sent = time.perf_counter()
                    response = await agent.post("/v1/containers", json={"name": f"bench-c{round_no}-{i}",
                                                                        "image": IMAGE})
                    latencies.append((time.perf_counter() - sent) * 1000)
                    if response.status_code == 200:
                        self.created.add(response.json()["id"])
                    return response

                started = time.perf_counter()
                responses = await asyncio.gather(*(one(agent, i) for i, agent in enumerate(agents)))
                wall = time.perf_counter() - started
                await self.delete_all(agents[0])
            finally:
                await asyncio.gather(*(agent.aclose() for agent in agents))
            failed = [r for r in responses if r.status_code != 200]
            if failed:
                raise RuntimeError(f"{len(failed)} of {N_BURST} parallel creates failed, e.g. "
                                   f"{failed[0].status_code} {failed[0].text[:300]}")
            rounds.append({"wall_s": wall, "latency_ms": latencies})
        return {"rounds": rounds}

    async def idle_memory(self) -> dict[str, Any]:
        """(d) what 200 started, idle containers add: their cgroups' usage, and the whole host's
        (MemAvailable), which also holds kernel memory for namespaces and mounts and server growth."""
        await asyncio.sleep(IDLE_SETTLE_S)
        before = await _meminfo()
        rss_before = self.server.rss_bytes()
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16, keepalive_expiry=KEEPALIVE_S)
        async with httpx.AsyncClient(base_url=self.server.url, limits=limits, timeout=120) as client:
            async def start(i: int) -> str:
                response = await client.post("/v1/containers", json={"name": f"bench-d-{i}", "image": IMAGE})
                response.raise_for_status()
                container_id: str = response.json()["id"]
                self.created.add(container_id)
                run = await client.post(f"/v1/containers/{container_id}/exec",
                                        json={"commands": ["true"], "timeout_ms": 10_000})
                run.raise_for_status()
                return container_id

            ids = await _bounded(16, [functools.partial(start, i) for i in range(N_IDLE)])
            await asyncio.sleep(IDLE_SETTLE_S)
            after = await _meminfo()
            rss_after = self.server.rss_bytes()
            readings = [_cgroup_memory(self.server.runtime_id(container_id)) for container_id in ids]
            await self.delete_all(client)
        usages = [reading for reading in readings if reading is not None]
        if len(usages) != N_IDLE:
            raise RuntimeError(f"{N_IDLE - len(usages)} of {N_IDLE} containers have no memory cgroup")
        meminfo_delta = {key: after[key] - before[key] for key in before if key in after}
        anon = sum(a for _u, a in usages)
        return {"containers": N_IDLE, "cgroup_sum_bytes": sum(u for u, _a in usages), "cgroup_anon_sum_bytes": anon,
                # Blind to other processes' user memory, unlike MemAvailable: a cross-check on a busy machine.
                "accounted_bytes": anon + sum(meminfo_delta.get(key, 0) for key in KERNEL_ONLY_FIELDS)
                + rss_after - rss_before,
                "mem_available_before": before["MemAvailable"], "mem_available_after": after["MemAvailable"],
                "mem_available_delta_bytes": before["MemAvailable"] - after["MemAvailable"],
                "meminfo_delta_bytes": meminfo_delta,
                "server_rss_before": rss_before, "server_rss_after": rss_after}

    def stream_big(self) -> dict[str, Any]:
        """(e) a command printing ``STREAM_BYTES`` through the streaming exec API: bytes per second at
        the client (every delta parsed, as a client does) and the server's RSS, sampled meanwhile."""
        container_id = self.create("bench-e")
        settle_s = self.server.settle()  # after the burst, a create may set the pool refilling
        command = f"head -c {STREAM_BYTES} /dev/zero | tr '\\0' a"
        rss_before, peak = self.server.rss_bytes(), [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], self.server.rss_bytes())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        received, events = 0, 0
        started = time.perf_counter()
        try:
            with self.client.stream("POST", f"/v1/containers/{container_id}/exec", json={
                    "commands": [command], "timeout_ms": 120_000, "stream": True}) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    events += 1
                    if event["type"] == "container.exec.output.delta":
                        received += len(event["delta"].get("stdout", ""))
                    elif event["type"] == "error":
                        raise RuntimeError(f"the stream ended with an error: {event}")
        finally:
            elapsed = time.perf_counter() - started
            done.set()
            sampler.join()
        self.delete(container_id)
        return {"bytes": STREAM_BYTES, "received": received, "seconds": elapsed, "events": events, "settle_s": settle_s,
                "rss_before": rss_before, "rss_peak": max(peak[0], rss_before)}

    async def many_idle(self, count: int) -> dict[str, Any]:
        """(f) ``N_MANY`` idle containers, made ``MANY_STEP`` at a time (16 at once): the server's RSS
        and MemAvailable after each step, then the slope of RSS per step (least squares)."""
        await asyncio.sleep(IDLE_SETTLE_S)
        steps = [{"containers": 0, "rss": self.server.rss_bytes(), "mem_available": (await _meminfo())["MemAvailable"],
                  "seconds": 0.0}]
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16, keepalive_expiry=KEEPALIVE_S)
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=self.server.url, limits=limits, timeout=120) as client:
            async def start(i: int) -> None:
                response = await client.post("/v1/containers", json={"name": f"bench-f-{i}", "image": IMAGE})
                if response.status_code != 200:
                    raise RuntimeError(f"container {i} of {count}: {response.status_code} {response.text[:300]}")
                container_id: str = response.json()["id"]
                self.created.add(container_id)
                run = await client.post(f"/v1/containers/{container_id}/exec",
                                        json={"commands": ["true"], "timeout_ms": 30_000})
                run.raise_for_status()

            for first in range(0, count, MANY_STEP):
                await _bounded(16, [functools.partial(start, i) for i in range(first, first + MANY_STEP)])
                steps.append({"containers": first + MANY_STEP, "rss": self.server.rss_bytes(),
                              "mem_available": (await _meminfo())["MemAvailable"],
                              "seconds": time.perf_counter() - started})
            await self.delete_all(client)
        return {"steps": steps, "rss_slope_bytes": _slope([(s["containers"], s["rss"]) for s in steps]) * MANY_STEP}

    async def delete_all(self, client: httpx.AsyncClient) -> None:
        async def delete(container_id: str) -> None:
            (await client.delete(f"/v1/containers/{container_id}")).raise_for_status()
            self.created.discard(container_id)

        await _bounded(16, [functools.partial(delete, c) for c in list(self.created)])


async def _bounded(limit: int, jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x: a growth rate that one noisy step cannot make."""
    mean_x = statistics.fmean(x for x, _y in points)
    mean_y = statistics.fmean(y for _x, y in points)
    return (sum((x - mean_x) * (y - mean_y) for x, y in points)
            / sum((x - mean_x) ** 2 for x, _y in points))


async def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes, each field the median of a few samples: MemAvailable wobbles by a
    few hundred KiB from one read to the next."""
    samples: list[dict[str, int]] = []
    for _ in range(5):
        fields = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            number, *unit = value.split()
            fields[key] = int(number) * (1024 if unit else 1)
        samples.append(fields)
        await asyncio.sleep(0.2)
    return {key: int(statistics.median(sample[key] for sample in samples)) for key in samples[0]}


def _cgroup_memory(container_id: str) -> tuple[int, int] | None:
    """(usage, anonymous) bytes of a container's memory cgroup; usage includes its page cache."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        directory, usage_file, anon_key = CGROUP_ROOT / "cove" / container_id, "memory.current", "anon"
    else:
        directory, usage_file, anon_key = CGROUP_ROOT / "memory" / "cove" / container_id, "memory.usage_in_bytes", "rss"
    try:
        usage = int((directory / usage_file).read_text())
        stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
    except (OSError, ValueError):
        return None
    return usage, int(stat.get(anon_key, 0))


# -- report -----------------------------------------------------------------------------------------

def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers and a PASS/MISS per target, kept in the JSON beside the raw samples."""
    first, warm = stats(results["a"]["total_ms"]), stats(results["b"]["exec_ms"])
    cold = stats(results["a_cold"]["total_ms"])
    burst = statistics.median(r["wall_s"] for r in results["c"]["rounds"])
    idle, stream = results["d"], results["e"]
    summary: dict[str, Any] = {
        "a_ms": first, "a_cold_ms": cold, "b_ms": warm, "b_lean_ms": stats(results["b"]["lean_exec_ms"]),
        "c_median_wall_s": burst,
        "d_host_mib": idle["mem_available_delta_bytes"] / idle["containers"] / MIB,
        "d_cgroup_mib": idle["cgroup_sum_bytes"] / idle["containers"] / MIB,
        "d_accounted_mib": idle["accounted_bytes"] / idle["containers"] / MIB,
        "e_mb_s": stream["received"] / stream["seconds"] / 1e6,
        "e_rss_growth_mib": (stream["rss_peak"] - stream["rss_before"]) / MIB}
    if "a_cold_runc" in results:
        summary["a_cold_runc_ms"] = stats(results["a_cold_runc"]["total_ms"])
    passed = {"a": first["p50"] <= TARGET_FIRST_MS, "a_cold": cold["p50"] <= TARGET_COLD_MS,
              "b": warm["p50"] <= TARGET_EXEC_MS, "b_p95": warm["p95"] <= TARGET_EXEC_P95_MS,
              "c": burst <= TARGET_BURST_S, "d": summary["d_host_mib"] <= TARGET_IDLE_MIB,
              "e": stream["received"] == stream["bytes"] and summary["e_mb_s"] >= TARGET_STREAM_MB_S}
    many = results.get("f")
    if many is not None:
        steps = many["steps"]
        summary["f_rss_mib_per_step"] = many["rss_slope_bytes"] / MIB
        summary["f_host_mib"] = (steps[0]["mem_available"] - steps[-1]["mem_available"]) / steps[-1]["containers"] / MIB
        passed["f"] = summary["f_rss_mib_per_step"] <= TARGET_MANY_RSS_MIB
    for tool in ("runc", "bwrap"):
        if tool in results.get("floor", {}):
            summary[f"{tool}_ms"] = {key: stats(samples) for key, samples in results["floor"][tool].items()}
    docker = results.get("docker")
    if docker is not None:
        summary["docker_run_ms"], summary["docker_exec_ms"] = stats(docker["run_ms"]), stats(docker["exec_ms"])
        summary["ratio_run"] = summary["docker_run_ms"]["p50"] / first["p50"]
        summary["ratio_exec"] = summary["docker_exec_ms"]["p50"] / warm["p50"]
        passed["ratio_run"] = summary["ratio_run"] >= TARGET_RUN_RATIO
        passed["ratio_exec"] = summary["ratio_exec"] >= TARGET_EXEC_RATIO
    summary["passed"] = passed
    return summary


def _verdict(ok: bool) -> str:
    return "[green]PASS[/]" if ok else "[red]MISS[/]"


def report(results: dict[str, Any]) -> None:
    summary = results["summary"]
    passed, first, warm, cold = summary["passed"], summary["a_ms"], summary["b_ms"], summary["a_cold_ms"]
    table = Table(title="Cove containers vs the machine's floor and Docker (Cove through HTTP; the others "
                        "through their CLIs)", title_justify="left")
    for column in ("measure", "n", "p50", "p95", "target", "result"):
        table.add_column(column, justify="left" if column in ("measure", "target") else "right")

    def timed(label: str, sample: dict[str, float], target: str = "", key: str = "", digits: int = 1) -> None:
        table.add_row(label, str(sample["n"]), f"{sample['p50']:.{digits}f} ms", f"{sample['p95']:.{digits}f} ms",
                      target, _verdict(passed[key]) if key else "")

    timed("(a) create + first `echo hi`", first, f"p50 <= {TARGET_FIRST_MS:g} ms", "a")
    timed("(a) … with the warm pool off", cold, f"p50 <= {TARGET_COLD_MS:g} ms", "a_cold")
    if "a_cold_runc_ms" in summary:
        runc_cold = summary["a_cold_runc_ms"]
        timed("(a) … pool off, COVE_RUNTIME=runc", runc_cold,
              f"(info: {runc_cold['p50'] / cold['p50']:.1f}x the launcher's)")
    timed("(b) warm exec `true`", warm, f"p50 <= {TARGET_EXEC_MS:g} ms", "b", digits=2)
    table.add_row("", "", "", "", f"p95 <= {TARGET_EXEC_P95_MS:g} ms", _verdict(passed["b_p95"]))
    timed("(b) … through http.client", summary["b_lean_ms"], "(info: less client CPU)", digits=2)
    walls = [r["wall_s"] for r in results["c"]["rounds"]]
    table.add_row(f"(c) {N_BURST} parallel creates", f"{len(walls)} rounds", f"{summary['c_median_wall_s']:.2f} s",
                  f"max {max(walls):.2f} s", f"median <= {TARGET_BURST_S:g} s", _verdict(passed["c"]))
    if "c_first" in results:
        fresh = results["c_first"]["rounds"][0]["wall_s"]
        table.add_row("(c) … the first burst a server sees", "1 round", f"{fresh:.2f} s", "",
                      "(info: pool at its floor)", "")
    idle = results["d"]
    table.add_row("(d) idle, host / container", str(idle["containers"]), f"{summary['d_host_mib']:.2f} MiB", "",
                  f"<= {TARGET_IDLE_MIB:g} MiB", _verdict(passed["d"]))
    table.add_row("(d) idle, cgroup / container", str(idle["containers"]), f"{summary['d_cgroup_mib']:.2f} MiB",
                  "", "(info)", "")
    table.add_row("(d) idle, kernel+anon / container", str(idle["containers"]),
                  f"{summary['d_accounted_mib']:.2f} MiB", "", "(cross-check)", "")
    stream = results["e"]
    table.add_row(f"(e) {stream['bytes'] / 1e6:g} MB streamed", "1", f"{summary['e_mb_s']:.0f} MB/s", "",
                  f">= {TARGET_STREAM_MB_S:g} MB/s, all of it", _verdict(passed["e"]))
    table.add_row("(e) … server RSS growth", "1", f"{summary['e_rss_growth_mib']:.1f} MiB", "", "(info)", "")
    if "f" in results:
        steps = results["f"]["steps"]
        table.add_row(f"(f) {steps[-1]['containers']} idle, server RSS", str(len(steps) - 1),
                      f"{summary['f_rss_mib_per_step']:.2f} MiB", "", f"<= {TARGET_MANY_RSS_MIB:g} MiB / {MANY_STEP}",
                      _verdict(passed["f"]))
        table.add_row(f"(f) {steps[-1]['containers']} idle, host / container", str(steps[-1]["containers"]),
                      f"{summary['f_host_mib']:.2f} MiB", "", "(info)", "")
    floor_rows = (("runc", "run_ms", "(a'') runc run `echo hi`", first),
                  ("runc", "exec_ms", "(b'') runc exec `true`", warm),
                  ("runc", "nsenter_ms", "(b'') nsenter -a `true`", warm),
                  ("bwrap", "run_ms", "(a'') bwrap `echo hi`", first))
    for tool, key, label, cove in floor_rows:
        if f"{tool}_ms" in summary:
            sample = summary[f"{tool}_ms"][key]
            timed(label, sample, f"Cove is {cove['p50'] / sample['p50']:.2f}x this")
    docker = results.get("docker")
    if docker is not None:
        timed("(a') docker run --rm echo hi", summary["docker_run_ms"])
        timed("(b') docker exec true", summary["docker_exec_ms"])
        table.add_row("ratio (a') / (a), p50", "", f"{summary['ratio_run']:.1f}x", "", f">= {TARGET_RUN_RATIO:g}x",
                      _verdict(passed["ratio_run"]))
        table.add_row("ratio (b') / (b), p50", "", f"{summary['ratio_exec']:.1f}x", "",
                      f">= {TARGET_EXEC_RATIO:g}x", _verdict(passed["ratio_exec"]))
    console.print(table)
    a_create, a_exec = stats(results["a"]["create_ms"]), stats(results["a"]["first_exec_ms"])
    console.print(f"(a) split, p50: POST /v1/containers {a_create['p50']:.1f} ms, then first exec "
                  f"{a_exec['p50']:.1f} ms")
    latencies = [latency for r in results["c"]["rounds"] for latency in r["latency_ms"]]
    console.print(f"(c) rounds {', '.join(f'{w:.2f}' for w in walls)} s; per-request p50 "
                  f"{statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms")
    kernel = ", ".join(f"{key} {idle['meminfo_delta_bytes'].get(key, 0) / MIB:+.0f}" for key in KERNEL_FIELDS)
    console.print(f"(d) for {idle['containers']}: MemAvailable {-idle['mem_available_delta_bytes'] / MIB:+.0f} MiB, "
                  f"cgroups {idle['cgroup_sum_bytes'] / MIB:.0f} MiB (anon {idle['cgroup_anon_sum_bytes'] / MIB:.0f}), "
                  "server RSS "
                  f"{(idle['server_rss_after'] - idle['server_rss_before']) / MIB:+.0f} MiB; meminfo MiB: {kernel}")
    console.print(f"(e) {stream['received'] / 1e6:.1f} of {stream['bytes'] / 1e6:g} MB arrived in "
                  f"{stream['seconds']:.2f} s, {stream['events']} events")
    if "f" in results:
        steps = results["f"]["steps"]
        console.print(f"(f) {steps[-1]['containers']} made in {steps[-1]['seconds']:.0f} s; server RSS "
                      f"{steps[0]['rss'] / MIB:.0f} -> {steps[-1]['rss'] / MIB:.0f} MiB")
    for tool, why in results.get("floor_skipped", {}).items():
        console.print(f"{tool}: {why}")
    if docker is None:
        console.print(f"docker: {results['docker_skipped']}")
    else:
        image = (f"image imported in {docker['import_s']:.1f} s" if docker["import_s"] is not None
                 else "image already imported")
        console.print(f"docker: {docker['origin']} {docker['version']}, {image}; its times include the docker "
                      "CLI's own start-up")


def _warn_if_busy() -> None:
    """Other work on the machine skews every number here; say so rather than hide it."""
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        console.print(f"[yellow]load average {load:.1f} before the run: other work is running, "
                      "numbers will be noisy[/]")


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}{'+dirty' if dirty else ''}"


# -- main -------------------------------------------------------------------------------------------

def _terminate_as_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # a SIGTERM still runs every cleanup


@contextlib.contextmanager
def cove_server(images_dir: Path, env: dict[str, str] | None = None) -> Iterator[Bench]:
    server = CoveServer(images_dir, env)
    try:
        server.start()
        limits = httpx.Limits(keepalive_expiry=KEEPALIVE_S)
        with httpx.Client(base_url=server.url, timeout=120, limits=limits) as client:
            bench = Bench(server, client, set())
            try:
                yield bench
            finally:
                for container_id in list(bench.created):
                    with contextlib.suppress(httpx.HTTPError):
                        bench.delete(container_id)
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--no-docker", action="store_true", help="skip the Docker comparison")
    parser.add_argument("--many", type=int, default=N_MANY,
                        help=f"idle containers for (f), a multiple of {MANY_STEP} (0 skips it)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate_as_exit)
    images_dir = Path(os.environ.get("COVE_IMAGES_DIR") or "/var/lib/cove/images")
    if not (images_dir / "manifests" / f"{IMAGE}.json").exists():
        console.print(f"[red]no image {IMAGE!r} in {images_dir}: run `make image` first[/]")
        return 1
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": _git_revision(), "images_dir": str(images_dir),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "cgroup": "v2" if (CGROUP_ROOT / "cgroup.controllers").exists() else "v1",
                 "loadavg_start": os.getloadavg()}}
    console.print(f"cove bench: kernel {platform.release()}, {os.cpu_count()} CPUs, cgroup "
                  f"{results['host']['cgroup']}, image {IMAGE!r} from {images_dir}, git {results['git']}")
    _warn_if_busy()
    with cove_server(images_dir) as bench:
        # (a) measures creates served by the warm pool, not the server's start-up filling it.
        results["a_settle_s"] = bench.server.settle()
        console.print("(a) create + first output …")
        results["a"] = bench.first_output()
        console.print("(b) warm exec …")
        results["b"] = bench.warm_exec()
        # (d) before (c): the server's own growth for 200 containers then counts in full.
        console.print(f"(d) {N_IDLE} idle containers …")
        results["d"] = asyncio.run(bench.idle_memory())
        console.print(f"(c) {N_BURST} parallel creates × {BURST_ROUNDS} …")
        results["c"] = asyncio.run(bench.burst())
        console.print(f"(e) {STREAM_BYTES / 1e6:g} MB through the streaming exec API …")
        results["e"] = bench.stream_big()
    with cove_server(images_dir, {"COVE_WARM_POOL": "0"}) as cold:
        cold.server.settle()  # the same start as (a)'s, without a pool to fill
        console.print("(a) again with the warm pool off …")
        results["a_cold"] = cold.first_output()
    with cove_server(images_dir) as first:
        first.server.settle()  # its pool at the floor it starts with: most of the burst starts cold
        console.print("(c) again: one burst on a fresh server …")
        results["c_first"] = asyncio.run(first.burst(1))
    if results["host"]["cgroup"] == "v1":  # where COVE_RUNTIME=auto is the launcher: runc beside it
        with cove_server(images_dir, {"COVE_WARM_POOL": "0", "COVE_RUNTIME": "runc"}) as runc_cold:
            runc_cold.server.settle()
            console.print("(a) again with the warm pool off, under runc …")
            results["a_cold_runc"] = runc_cold.first_output()
    if args.many:
        with cove_server(images_dir, MANY_SERVER_ENV) as many:
            console.print(f"(f) {args.many} idle containers …")
            results["f"] = asyncio.run(many.many_idle(args.many))
    layers = [images_dir / "layers" / digest
              for digest in json.loads((images_dir / "manifests" / f"{IMAGE}.json").read_text())["layers"]]
    results["floor"], results["floor_skipped"] = {}, {}
    for tool, measure in (("runc", floor.runc_floor), ("bwrap", floor.bwrap_floor)):
        console.print(f"{tool} directly …")
        try:
            results["floor"][tool] = measure(layers, N_FLOOR, WARM_FLOOR)
        except FileNotFoundError:
            results["floor_skipped"][tool] = "not installed: skipped"
    if args.no_docker:
        results["docker_skipped"] = "skipped (--no-docker)"
    else:
        with docker_baseline.docker_daemon() as docker:
            if docker is None:
                results["docker_skipped"] = "not available on this machine"
            else:
                console.print(f"docker ({docker.origin}): image, then (a') and (b') …")
                docker_baseline.import_image(docker, images_dir, IMAGE)
                results["docker"] = {
                    "origin": docker.origin, "version": docker.version, "import_s": docker.import_s,
                    "run_ms": docker_baseline.time_run(docker, N_DOCKER_RUN, WARM_DOCKER),
                    "exec_ms": docker_baseline.time_exec(docker, N_DOCKER_EXEC, WARM_DOCKER)}
    results["host"]["loadavg_end"] = os.getloadavg()
    results["summary"] = summarize(results)
    report(results)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"containers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    console.print(f"raw numbers: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
