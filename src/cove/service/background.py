"""The queue of background responses, fair across projects.

One queue in arrival order would let a project that queues a thousand responses delay another
project's one by a thousand runs. Here each project waits in its own line, the workers serve the
projects in turn (round-robin: a project that was just served goes to the back), and a project never
runs more than its ``background_running`` quota at once, so the other workers stay free for others.
The store stays the truth for what is queued; this is only the order in which this server runs them.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable


class FairQueue:
    def __init__(self, limit: Callable[[str], int]) -> None:
        self._limit = limit
        """A project's most responses running at once."""
        self._waiting: dict[str, deque[str]] = {}
        """Projects with responses waiting, in the order they are served next (dicts keep insertion order)."""
        self._running: Counter[str] = Counter()
        self._changed = asyncio.Event()
        self._queued: set[str] = set()
        """The responses waiting (a replica's scan of the store finds them again: they are put once)."""

    def put(self, project: str, response_id: str) -> None:
        if response_id in self._queued:
            return
        self._queued.add(response_id)
        self._waiting.setdefault(project, deque()).append(response_id)
        self._changed.set()

    async def get(self) -> tuple[str, str]:
        """The next ``(project, response_id)`` to run; call ``done(project)`` when it has run."""
        while (picked := self._pick()) is None:
            self._changed.clear()
            await self._changed.wait()
        return picked

    def done(self, project: str) -> None:
        self._running[project] -= 1
        if self._running[project] <= 0:
            del self._running[project]
        self._changed.set()

    def _pick(self) -> tuple[str, str] | None:
        for project in self._waiting:
            if self._running[project] < self._limit(project):
                line = self._waiting.pop(project)
                response_id = line.popleft()
                self._queued.discard(response_id)
                if line:
                    self._waiting[project] = line  # to the back of the turn order
                self._running[project] += 1
                return project, response_id
        return None
