"""The warm pool's keeper, on a real engine: a create taking from the pool while a start for it is under
way starts another at once, rather than once that start ends, so a client creating faster than one
start takes does not drain the pool."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from cove.config import Settings
from cove.sandbox.images.store import ImageStore
from cove.sandbox.linux.container import LinuxSandbox
from cove.sandbox.linux.engine import LinuxEngine
from tests.conftest import IMAGES_DIR, data_dir
from tests.polling import eventually_async

pytestmark = pytest.mark.root


async def _takes_during_a_start() -> None:
    data = data_dir("cove-pool-keeper")
    settings = Settings(data_dir=data, images_dir=IMAGES_DIR, warm_pool=2, warm_pool_max=2, disk_limit="2g")
    engine = LinuxEngine(settings, ImageStore(settings.image_root, settings.subuid_base))
    await engine.start()
    gate = asyncio.Event()
    held: list[int] = []
    start_pooled = engine._start_pooled

    async def held_start() -> LinuxSandbox:
        """A pool start that waits for the test's word before starting anything."""
        held.append(len(held))
        await gate.wait()
        return await start_pooled()

    try:
        await eventually_async(lambda: len(engine._pool) == 2, timeout=60, what="the pool to fill")
        engine._start_pooled = held_start  # type: ignore[method-assign]
        await engine.create("cntr_first", settings.default_image, engine.pool_limits)
        await eventually_async(lambda: len(held) == 1, what="a start to replace the first container taken")
        await engine.create("cntr_second", settings.default_image, engine.pool_limits)
        await eventually_async(lambda: len(held) == 2, what="a second start while the first is under way")
        gate.set()
        await eventually_async(lambda: len(engine._pool) == 2, timeout=60, what="the pool to fill again")
    finally:
        gate.set()
        for container_id in ("cntr_first", "cntr_second"):
            await engine.destroy(container_id)
        await engine.close()
        shutil.rmtree(data, ignore_errors=True)


def test_a_take_during_a_start_starts_another_at_once() -> None:
    asyncio.run(_takes_during_a_start())
