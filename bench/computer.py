"""``make bench``: hosted computer use on real desktop containers (Xvfb, openbox, Chromium).

The container engine runs in-process on a fresh data dir (as ``bench/neighbours.py``); each desktop
serves a page from inside the container (``python3 -m http.server`` on its loopback) whose button
changes colour on every click, so every timed click changes the screen. It prints p50/p95 and
PASS/MISS per target (issue 12), and writes the raw samples to ``bench/results/``. Targets are
reported, not asserted: the exit code is 0 unless an action fails. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from percentiles import p50_p95
from rich.console import Console

from cove.config import Settings
from cove.sandbox.base import Command, Limits, Screen
from cove.sandbox.images.store import ImageStore
from cove.sandbox.linux.container import LinuxSandbox
from cove.sandbox.linux.display import png_size
from cove.sandbox.linux.engine import LinuxEngine

RESULTS_DIR = Path(__file__).resolve().parent / "results"
IMAGE = "desktop"
SCREEN = Screen(1024, 768, "browser")
PAGE = """<!doctype html><html><head><title>bench</title><style>body { margin: 0 }</style></head>
<body onload="fetch('/loaded')"><button id="b" style="position:absolute; left:0; top:0; width:300px; height:100px"
onclick="n = (window.n || 0) + 1; window.n = n; this.textContent = 'clicked ' + n;
this.style.background = n % 2 ? '#0a0' : '#a00'">click</button></body></html>"""
BUTTON = {"type": "click", "x": 150, "y": 137}
"""The button, below Chromium's 87 px of tab strip and toolbar."""
LOG = "/srv/http.log"

N_FIRST = 8
N_CLICKS, WARM_CLICKS = 100, 10
N_SESSIONS, IDLE_SETTLE_S, ACTIONS_EACH = 10, 5.0, 20

TARGET_CLICK_MS = 100.0
TARGET_FIRST_S = 2.0
TARGET_IDLE_MB = 200.0

console = Console(width=None if sys.stdout.isatty() else 110)


def verdict(ok: bool) -> str:
    return "[green]PASS[/]" if ok else "[red]MISS[/]"


async def serve_page(sandbox: LinuxSandbox) -> None:
    files = await sandbox.files()
    await files.write("/srv/page/index.html", [PAGE.encode()])
    await sandbox.exec(Command(f"cd /srv/page && setsid python3 -m http.server 8000 --bind 127.0.0.1 >{LOG} 2>&1 "
                               "</dev/null &", 10_000, 1000))


async def open_page(sandbox: LinuxSandbox) -> None:
    """Through the address bar, as a model would; then waits for the page's own request."""
    display = await sandbox.display(SCREEN)
    await display.act([{"type": "keypress", "keys": ["CTRL", "L"]}])
    await display.act([{"type": "type", "text": "127.0.0.1:8000"}, {"type": "keypress", "keys": ["DELETE"]},
                       {"type": "keypress", "keys": ["ENTER"]}])
    files = await sandbox.files()
    deadline = time.monotonic() + 30
    while b"GET /loaded" not in (await files.read(LOG, 1 << 20)).data:
        if time.monotonic() > deadline:
            raise RuntimeError("the page did not load")
        await asyncio.sleep(0.05)  # polling the page's server log: the bench's own wait, not a measurement


async def new_desktop(engine: LinuxEngine, name: str) -> LinuxSandbox:
    sandbox = await engine.create(name, IMAGE, Limits())
    await serve_page(sandbox)
    return sandbox


# -- (a) first action on a fresh desktop container -------------------------------------------------

async def first_actions(engine: LinuxEngine) -> dict[str, Any]:
    create_s, first_s = [], []
    for index in range(N_FIRST):
        name = f"cntr_bench_first{index}"
        start = time.perf_counter()
        sandbox = await engine.create(name, IMAGE, Limits())
        created = time.perf_counter()
        display = await sandbox.display(SCREEN)
        shot = await display.act([{"type": "click", "x": 500, "y": 400}])
        done = time.perf_counter()
        assert png_size(shot) == (SCREEN.width, SCREEN.height)
        create_s.append(created - start)
        first_s.append(done - created)
        await engine.destroy(name)
    return {"create_s": create_s, "first_action_s": first_s}


# -- (b) settled click, then screenshot --------------------------------------------------------------

async def clicks(engine: LinuxEngine) -> dict[str, Any]:
    sandbox = await new_desktop(engine, "cntr_bench_clicks")
    try:
        await open_page(sandbox)
        display = await sandbox.display(SCREEN)
        click_ms, shot_ms, changed = [], [], 0
        previous = await display.screenshot()
        for index in range(WARM_CLICKS + N_CLICKS):
            start = time.perf_counter()
            shot = await display.act([BUTTON])
            elapsed = (time.perf_counter() - start) * 1000
            if index >= WARM_CLICKS:
                click_ms.append(elapsed)
                changed += shot != previous
            previous = shot
        for _ in range(50):
            start = time.perf_counter()
            await display.screenshot()
            shot_ms.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(IDLE_SETTLE_S)  # idle, on purpose: the memory of an idle session is measured
        alone = memory_of([sandbox.id])
    finally:
        await engine.destroy("cntr_bench_clicks")
    return {"click_ms": click_ms, "screenshot_ms": shot_ms, "clicks_changed": changed, "alone": alone}


# -- (c) idle memory and (d) sessions at once --------------------------------------------------------

def container_pids(container_id: str) -> list[int]:
    procs = Path("/sys/fs/cgroup/memory/cove") / container_id / "cgroup.procs"
    if not procs.exists():
        procs = Path("/sys/fs/cgroup/cove") / container_id / "cgroup.procs"
    return [int(pid) for pid in procs.read_text().split()]


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cgroup_bytes(container_id: str) -> dict[str, int]:
    base = Path("/sys/fs/cgroup/memory/cove") / container_id
    stat = dict(line.split() for line in (base / "memory.stat").read_text().splitlines())
    return {"usage": int((base / "memory.usage_in_bytes").read_text()), "rss": int(stat["rss"]),
            "cache": int(stat["cache"]), "shmem": int(stat.get("shmem", 0))}


def memory_of(ids: list[str]) -> dict[str, Any]:
    per_pss = {cid: sum(pss_kib(pid) for pid in container_pids(cid)) / 1024 for cid in ids}
    cgroups = {cid: cgroup_bytes(cid) for cid in ids}
    return {"pss_mb": per_pss, "cgroup": cgroups}


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sessions(engine: LinuxEngine, count: int) -> dict[str, Any]:
    names = [f"cntr_bench_s{index}" for index in range(count)]
    available_before = mem_available_mb()
    try:
        start = time.perf_counter()
        sandboxes = await asyncio.gather(*(new_desktop(engine, name) for name in names))
        await asyncio.gather(*(open_page(sandbox) for sandbox in sandboxes))
        started_s = time.perf_counter() - start
        await asyncio.sleep(IDLE_SETTLE_S)  # idle, on purpose: the memory of idle sessions is the measurement
        idle = memory_of([sandbox.id for sandbox in sandboxes])
        available_drop = available_before - mem_available_mb()
        latencies: list[float] = []
        failures: list[str] = []

        async def drive(sandbox: LinuxSandbox) -> None:
            display = await sandbox.display(SCREEN)
            for index in range(ACTIONS_EACH):
                action = BUTTON if index % 2 == 0 else {"type": "keypress", "keys": ["TAB"]}
                begin = time.perf_counter()
                try:
                    shot = await display.act([action])
                    if png_size(shot) != (SCREEN.width, SCREEN.height):
                        failures.append(f"{sandbox.id}: wrong size")
                except Exception as exc:
                    failures.append(f"{sandbox.id}: {exc}")
                latencies.append((time.perf_counter() - begin) * 1000)

        busy_start = time.perf_counter()
        await asyncio.gather(*(drive(sandbox) for sandbox in sandboxes))
        busy_s = time.perf_counter() - busy_start
    finally:
        for name in names:
            await engine.destroy(name)
    return {"started_s": started_s, "idle": idle, "mem_available_drop_mb": available_drop,
            "action_ms": latencies, "failures": failures, "busy_s": busy_s}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=N_SESSIONS)
    args = parser.parse_args()
    n_sessions = args.sessions
    data = Path(tempfile.mkdtemp(prefix="cove-bench-computer-", dir="/var/tmp"))
    data.chmod(0o711)
    settings = Settings(data_dir=data, images_dir=Path(os.environ.get("COVE_IMAGES_DIR", "/var/lib/cove/images")),
                        warm_pool=0, disk_limit="2g")
    store = ImageStore(settings.image_root, settings.subuid_base)
    if not store.exists(IMAGE):
        console.print(f"[red]The {IMAGE!r} image is missing: run `make image`[/]")
        return 1
    engine = LinuxEngine(settings, store)
    load_start = os.getloadavg()
    await engine.start()
    try:
        first = await first_actions(engine)
        click = await clicks(engine)
        many = await sessions(engine, args.sessions)
    finally:
        await engine.close()
        shutil.rmtree(data, ignore_errors=True)

    f50, f95 = p50_p95(first["first_action_s"])
    c50, c95 = p50_p95(click["click_ms"])
    s50, s95 = p50_p95(click["screenshot_ms"])
    pss = list(many["idle"]["pss_mb"].values())
    per_session = statistics.mean(pss)
    alone = next(iter(click["alone"]["pss_mb"].values()))
    anon = statistics.mean(c["rss"] + c["shmem"] for c in many["idle"]["cgroup"].values()) / (1 << 20)
    usage = statistics.mean(c["usage"] for c in many["idle"]["cgroup"].values()) / (1 << 20)
    a50, a95 = p50_p95(many["action_ms"])
    failures = many["failures"]
    console.print(f"(a) first action on a fresh desktop container (display + Chromium + click + settled screenshot, "
                  f"n={N_FIRST}): p50 {f50:.2f} s, p95 {f95:.2f} s; create before it p50 "
                  f"{statistics.median(first['create_s']) * 1000:.0f} ms; target p50 <= {TARGET_FIRST_S:g} s "
                  f"{verdict(f50 <= TARGET_FIRST_S)}")
    console.print(f"(b) settled click then screenshot (n={N_CLICKS}, {click['clicks_changed']} changed the screen): "
                  f"p50 {c50:.0f} ms, p95 {c95:.0f} ms; target p50 <= {TARGET_CLICK_MS:g} ms "
                  f"{verdict(c50 <= TARGET_CLICK_MS)}; plain screenshot p50 {s50:.0f} ms, p95 {s95:.0f} ms")
    console.print(f"(c) idle desktop session, {n_sessions} running (page loaded, {IDLE_SETTLE_S:g} s idle): PSS "
                  f"{per_session:.0f} MB each (a session alone, not sharing its libraries: {alone:.0f} MB); "
                  f"cgroup anon+shmem {anon:.0f} MB, cgroup usage {usage:.0f} MB; MemAvailable "
                  f"drop {many['mem_available_drop_mb'] / n_sessions:.0f} MB per session; target PSS <= "
                  f"{TARGET_IDLE_MB:g} MB {verdict(per_session <= TARGET_IDLE_MB)}")
    console.print(f"(d) {n_sessions} sessions at once: started and loaded in {many['started_s']:.1f} s; "
                  f"{n_sessions}x{ACTIONS_EACH} actions in {many['busy_s']:.1f} s, p50 {a50:.0f} ms, p95 {a95:.0f} ms, "
                  f"{len(failures)} failed {verdict(not failures)}")
    for failure in failures[:5]:
        console.print(f"  [red]{failure}[/]")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"computer-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"first": first, "clicks": click, "sessions": many, "load_start": load_start,
                               "load_end": os.getloadavg(), "cpus": os.cpu_count()}, indent=1))
    console.print(f"samples: {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
