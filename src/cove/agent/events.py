"""An append-only log of one response's stream events that any number of readers can follow.

The run appends; an HTTP stream follows from where its client is; a client that goes away just
stops following, and the run goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


class EventLog:
    def __init__(self, first_sequence: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.first_sequence = first_sequence
        self.closed = False
        self._changed = asyncio.Condition()

    @property
    def next_sequence(self) -> int:
        return self.first_sequence + len(self.events)

    async def append(self, event: dict[str, Any]) -> dict[str, Any]:
        event["sequence_number"] = self.next_sequence
        self.events.append(event)
        async with self._changed:
            self._changed.notify_all()
        return event

    async def close(self) -> None:
        self.closed = True
        async with self._changed:
            self._changed.notify_all()

    async def follow(self, starting_after: int = -1) -> AsyncIterator[dict[str, Any]]:
        """Events with a sequence number above ``starting_after``, live until the log closes."""
        index = max(0, starting_after + 1 - self.first_sequence)
        while True:
            while index < len(self.events):
                yield self.events[index]
                index += 1
            if self.closed:
                return
            async with self._changed:
                if index >= len(self.events) and not self.closed:
                    await self._changed.wait()
