"""What metrics and tracing cost a warm exec: the server's own CPU (utime + stime from /proc/PID/stat)
per ``POST /v1/containers/{id}/exec`` of ``true``, this tree against another source tree (``--base``,
e.g. main's ``src`` before the instrumentation), in alternating rounds on fresh servers.

CPU time rather than wall time: on a shared 2-core machine the wall clock of a 3 ms request moves by
more than the few microseconds this is looking for; the server's CPU per request barely does.
Target: no measurable difference (the medians within the rounds' spread). Also reports one scrape of
``/metrics`` (ms), which costs the store's counts.

    .venv/bin/python bench/metrics_overhead.py --base /path/to/other/src
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
from containers import IMAGE, cove_server
from rich.console import Console
from rich.table import Table

SRC = Path(__file__).resolve().parent.parent / "src"
console = Console()


def server_cpu(pid: int) -> float:
    """The server process's own CPU seconds (utime + stime; no children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_exec(images_dir: Path, src: Path, execs: int, warm: int) -> tuple[float, float]:
    """Microseconds of server CPU per warm exec, and ms per scrape, for a server importing ``src``."""
    env = {"PYTHONPATH": str(src), "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "COVE_WARM_POOL": "1"}
    with cove_server(images_dir, env) as bench:
        assert bench.server.proc is not None
        pid = bench.server.proc.pid
        container_id = bench.create("cpu")
        body = {"commands": ["true"]}
        for _ in range(warm):
            bench.client.post(f"/v1/containers/{container_id}/exec", json=body).raise_for_status()
        before = server_cpu(pid)
        for _ in range(execs):
            bench.client.post(f"/v1/containers/{container_id}/exec", json=body).raise_for_status()
        per_exec = (server_cpu(pid) - before) / execs * 1e6
        started = time.perf_counter()
        scraped = httpx.get(f"{bench.server.url}/metrics", timeout=30)
        scrape_ms = (time.perf_counter() - started) * 1000 if scraped.status_code == 200 else float("nan")
        return per_exec, scrape_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", type=Path, action="append", default=[],
                        help="another source tree to compare with (its src directory); may be repeated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--execs", type=int, default=3000)
    parser.add_argument("--warm", type=int, default=200)
    args = parser.parse_args()
    images_dir = Path(os.environ.get("COVE_IMAGES_DIR") or "/var/lib/cove/images")
    if not (images_dir / "manifests" / f"{IMAGE}.json").exists():
        console.print(f"[red]no image {IMAGE!r} in {images_dir}: run `make image` first[/]")
        return 1
    trees = {"this tree": SRC, **{f"base {index + 1}": base.resolve() for index, base in enumerate(args.base)}}
    cpu: dict[str, list[float]] = {name: [] for name in trees}
    scrapes: dict[str, list[float]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        order = list(trees)[round_ % len(trees):] + list(trees)[:round_ % len(trees)]  # each first in turn
        for name in order:
            per_exec, scrape_ms = cpu_per_exec(images_dir, trees[name], args.execs, args.warm)
            cpu[name].append(per_exec)
            scrapes[name].append(scrape_ms)
            console.print(f"round {round_ + 1} {name}: {per_exec:.1f} µs CPU per exec, scrape {scrape_ms:.1f} ms")
    table = Table(title=f"server CPU per warm exec ({args.execs} execs x {args.rounds} rounds)")
    for column in ("tree", "rounds (µs)", "median (µs)", "scrape (ms)"):
        table.add_column(column)
    for name in trees:
        table.add_row(f"{name} ({trees[name]})", ", ".join(f"{v:.1f}" for v in cpu[name]),
                      f"{statistics.median(cpu[name]):.1f}", f"{statistics.median(scrapes[name]):.1f}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
