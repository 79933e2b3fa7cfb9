"""The sandbox's own exec cost, without HTTP: ``LinuxSandbox.exec`` of ``true`` in a warm container,
and the first exec in a container handed out by the warm pool against the warm execs after it.

    PYTHONPATH=src python bench/sandbox_exec.py [--samples N] [--pooled N]

The engine runs in-process on a fresh data dir (as bench/neighbours.py does); prints medians in ms.
Meant for A/B runs: point PYTHONPATH at two trees and alternate rounds in the same minutes.
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

from cove.config import Settings
from cove.sandbox.base import Command, Limits
from cove.sandbox.images.store import ImageStore
from cove.sandbox.linux.engine import LinuxEngine


async def _exec_ms(sandbox: object, command: str) -> float:
    start = time.perf_counter()
    out = await sandbox.exec(Command(command, 10_000, 1000))  # type: ignore[attr-defined]
    elapsed = (time.perf_counter() - start) * 1000
    assert out.outcome.type == "exit" and out.outcome.exit_code == 0, out
    return elapsed


async def _until_pooled(engine: LinuxEngine) -> None:
    while len(engine._pool) < engine.pool_demand.target():
        await asyncio.sleep(0.01)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=300, help="warm execs of `true`")
    parser.add_argument("--pooled", type=int, default=10, help="containers taken from the pool")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="cove-bench-exec-", dir="/var/tmp"))
    data.chmod(0o711)
    settings = Settings(data_dir=data, images_dir=Path(os.environ.get("COVE_IMAGES_DIR", "/var/lib/cove/images")),
                        warm_pool=1 if args.pooled else 0, disk_limit="2g")
    engine = LinuxEngine(settings, ImageStore(settings.image_root, settings.subuid_base))
    await engine.start()
    result: dict[str, float] = {}
    try:
        sandbox = await engine._start_new("cntr_bench", engine.images.get("default"), Limits(), live_as="cntr_bench")
        for _ in range(30):
            await _exec_ms(sandbox, "true")
        warm = [await _exec_ms(sandbox, "true") for _ in range(args.samples)]
        result["warm_true_p50"] = statistics.median(warm)
        result["warm_true_p95"] = statistics.quantiles(warm, n=20)[-1]
        # The first exec right after the create (as a client does it, while the pool refills), and
        # the first exec once the refill is done (what is lazy in the container itself).
        firsts, settled, seconds = [], [], []
        for index in range(args.pooled):
            await _until_pooled(engine)
            pooled = await engine.create(f"cntr_pooled{index}", "default", Limits())
            firsts.append(await _exec_ms(pooled, "echo hi"))
            await _until_pooled(engine)
            seconds.append(statistics.median([await _exec_ms(pooled, "echo hi") for _ in range(5)]))
            await engine.destroy(f"cntr_pooled{index}")
            await _until_pooled(engine)
            pooled = await engine.create(f"cntr_settled{index}", "default", Limits())
            await _until_pooled(engine)
            settled.append(await _exec_ms(pooled, "echo hi"))
            await engine.destroy(f"cntr_settled{index}")
        if firsts:
            result["pooled_first_echo_p50"] = statistics.median(firsts)
            result["pooled_first_after_refill_p50"] = statistics.median(settled)
            result["pooled_warm_echo_p50"] = statistics.median(seconds)
    finally:
        await engine.close()
        for container_id in list(engine._live):
            await engine.destroy(container_id)
        await engine.destroy("cntr_bench")
        shutil.rmtree(data, ignore_errors=True)
    print(json.dumps({key: round(value, 3) for key, value in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
