"""A background pass run every few seconds (expiry of containers, files and response snapshots).

One failing pass is logged and the next one runs as usual; stopping cancels the pass under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, what: str, sweep: Callable[[], Awaitable[bool]], every: float) -> None:
        """``sweep()`` returns True when it stopped at a batch limit: it runs again at once."""
        self.what = what
        self._sweep = sweep
        self._every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                while await self._sweep():
                    continue  # a whole batch: more may be waiting
            except Exception:
                log.exception("%s pass failed", self.what)
            await asyncio.sleep(self._every)
