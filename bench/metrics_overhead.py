"""What metrics and tracing cost a warm exec: the server's own CPU (utime + stime from /proc/PID/stat)
per ``POST /v1/containers/{id}/exec`` of ``true``, this tree against other source trees (``--base``,
e.g. a tree before the instrumentation).

CPU time rather than wall time: on a shared 2-core machine the wall clock of a 3 ms request moves by
more than the few microseconds looked for here. CPU time still moves with the machine's load (caches,
frequency), so the servers run side by side and take the requests in small interleaved blocks: each
tree sees the same load. Target: no measurable difference (the medians of the blocks within their
spread). Also reports one scrape of ``/metrics`` per tree (ms).

    .venv/bin/python bench/metrics_overhead.py --base /path/to/other/src [--base ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
from containers import IMAGE, Bench, cove_server
from percentiles import p50_p95
from rich.console import Console
from rich.table import Table

SRC = Path(__file__).resolve().parent.parent / "src"
console = Console()


def server_cpu(bench: Bench) -> float:
    """The server process's own CPU seconds (utime + stime; no children)."""
    assert bench.server.proc is not None
    fields = Path(f"/proc/{bench.server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def execs(bench: Bench, container_id: str, count: int) -> None:
    for _ in range(count):
        bench.client.post(f"/v1/containers/{container_id}/exec", json={"commands": ["true"]}).raise_for_status()


def scrape_ms(bench: Bench) -> float:
    started = time.perf_counter()
    answer = httpx.get(f"{bench.server.url}/metrics", timeout=30)
    return (time.perf_counter() - started) * 1000 if answer.status_code == 200 else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", type=Path, action="append", default=[],
                        help="another source tree to compare with (its src directory); may be repeated")
    parser.add_argument("--execs", type=int, default=3000, help="warm execs per tree")
    parser.add_argument("--block", type=int, default=100, help="execs per tree in a row")
    parser.add_argument("--warm", type=int, default=200)
    args = parser.parse_args()
    images_dir = Path(os.environ.get("COVE_IMAGES_DIR") or "/var/lib/cove/images")
    if not (images_dir / "manifests" / f"{IMAGE}.json").exists():
        console.print(f"[red]no image {IMAGE!r} in {images_dir}: run `make image` first[/]")
        return 1
    trees = {"this tree": SRC, **{f"base {index + 1}": base.resolve() for index, base in enumerate(args.base)}}
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    with contextlib.ExitStack() as stack:
        benches = {name: stack.enter_context(cove_server(images_dir, {"PYTHONPATH": str(src), "PATH": path,
                                                                         "COVE_WARM_POOL": "1"}))
                   for name, src in trees.items()}
        containers = {name: bench.create("cpu") for name, bench in benches.items()}
        for name, bench in benches.items():
            execs(bench, containers[name], args.warm)
        blocks: dict[str, list[float]] = {name: [] for name in trees}
        for index in range(args.execs // args.block):
            names = list(trees)[index % len(trees):] + list(trees)[:index % len(trees)]  # each first in turn
            for name in names:
                before = server_cpu(benches[name])
                execs(benches[name], containers[name], args.block)
                blocks[name].append((server_cpu(benches[name]) - before) / args.block * 1e6)
        scrapes = {name: scrape_ms(bench) for name, bench in benches.items()}
    table = Table(title=f"server CPU per warm exec, µs ({args.execs} execs per tree in blocks of {args.block})")
    for column in ("tree", "mean ± standard error", "p50 of blocks", "p95 of blocks", "scrape (ms)"):
        table.add_column(column)
    for name, src in trees.items():
        p50, p95 = p50_p95(blocks[name])
        error = statistics.stdev(blocks[name]) / len(blocks[name]) ** 0.5
        table.add_row(f"{name} ({src})", f"{statistics.fmean(blocks[name]):.1f} ± {error:.1f}", f"{p50:.1f}",
                      f"{p95:.1f}", f"{scrapes[name]:.1f}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
