"""A neighbour's exec latency while another container misbehaves (issue: defense in depth).

One container runs a fork bomb, a memory hog, a disk filler and an output flood at once; the
neighbour runs ``true`` over and over. Prints the neighbour's p50/p95 quiet and under attack, the
ratio (target <= 2x) and whether the host stayed responsive (a host ``true`` in the same windows).
The engine runs in-process, with the limits a default container gets (1 CPU, 1 GiB, 1024 pids).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from percentiles import p50_p95
from rich.console import Console

from cove.config import Settings
from cove.sandbox.base import Command, Limits
from cove.sandbox.images.store import ImageStore
from cove.sandbox.linux.engine import LinuxEngine

SAMPLES = 100
TARGET_RATIO = 2.0
ATTACKS = {
    "fork bomb": "bomb() { bomb | bomb & }; bomb; sleep 60",
    "memory hog": "while true; do python3 -c 'b = bytearray(3 << 30)' 2>/dev/null; done",
    "disk filler": "while true; do dd if=/dev/zero of=/root/fill bs=1M count=9999 2>/dev/null; rm -f /root/fill; done",
    "output flood": "yes 'flood flood flood flood'",
}
console = Console()


async def _latencies(engine: LinuxEngine, container_id: str) -> list[float]:
    sandbox = await engine.get(container_id, Limits())
    result = []
    for _ in range(SAMPLES):
        start = time.perf_counter()
        await sandbox.exec(Command("true", 10_000, 1000))
        result.append((time.perf_counter() - start) * 1000)
    return result


def _host_true() -> float:
    start = time.perf_counter()
    subprocess.run(["true"], check=True)
    return (time.perf_counter() - start) * 1000


async def main() -> int:
    data = Path(tempfile.mkdtemp(prefix="cove-bench-neighbours-", dir="/var/tmp"))
    data.chmod(0o711)
    settings = Settings(data_dir=data, images_dir=Path(os.environ.get("COVE_IMAGES_DIR", "/var/lib/cove/images")),
                        warm_pool=0, disk_limit="2g")
    engine = LinuxEngine(settings, ImageStore(settings.image_root, settings.subuid_base))
    await engine.start()
    try:
        await engine.create("cntr_neighbour", "default", Limits())
        attacker = await engine.create("cntr_attacker", "default", Limits())
        await _latencies(engine, "cntr_neighbour")  # warm-up
        quiet = await _latencies(engine, "cntr_neighbour")
        host_quiet = [_host_true() for _ in range(20)]
        attacks = [asyncio.create_task(attacker.exec(Command(script, 60_000, 1000))) for script in ATTACKS.values()]
        await asyncio.sleep(5)  # let them reach their limits
        noisy = await _latencies(engine, "cntr_neighbour")
        host_noisy = [_host_true() for _ in range(20)]
        await attacker.stop()
        await asyncio.gather(*attacks, return_exceptions=True)
    finally:
        await engine.close()
        for container_id in ("cntr_neighbour", "cntr_attacker"):
            await engine.destroy(container_id)
        shutil.rmtree(data, ignore_errors=True)
    (q50, q95), (n50, n95) = p50_p95(quiet), p50_p95(noisy)
    ratio = n50 / q50
    verdict = "[green]PASS[/]" if ratio <= TARGET_RATIO else "[red]MISS[/]"
    console.print(f"attacks in the other container: {', '.join(ATTACKS)}")
    console.print(f"neighbour exec `true`, quiet: p50 {q50:.2f} ms, p95 {q95:.2f} ms (n={SAMPLES})")
    console.print(f"neighbour exec `true`, under attack: p50 {n50:.2f} ms, p95 {n95:.2f} ms (n={SAMPLES})")
    console.print(f"ratio p50 {ratio:.2f}x (target <= {TARGET_RATIO:g}x) {verdict}")
    console.print(f"host `true` p50: quiet {statistics.median(host_quiet):.1f} ms, "
                  f"under attack {statistics.median(host_noisy):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
