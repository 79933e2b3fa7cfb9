"""Search results and page reads kept for a while (``COVE_WEB_SEARCH_CACHE_SECONDS``), bounded in
memory (``COVE_WEB_SEARCH_CACHE_SIZE``, least recently used first out).

A model often repeats a search or reopens a page within one task, and a paid engine bills each
call. Entries are keyed by everything that shapes the answer (engine, query, domains, context
size, location; for pages the URL and domains), so a narrower ``allowed_domains`` never gets a
page or hit that was fetched for a wider one. Failures are not kept: an outage is not remembered.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from cove.search.base import Hit, Page, Query, SearchEngine


class TtlCache:
    """An LRU map whose entries also expire; ``size`` of an entry is the caller's estimate in bytes."""

    def __init__(self, seconds: float, max_bytes: int) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[Hashable, tuple[float, int, Any]] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[2]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        if self.seconds <= 0 or size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + self.seconds, size, value)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: Hashable) -> None:
        self.bytes -= self._entries.pop(key)[1]


class CachedEngine(SearchEngine):
    """``engine`` with its answers kept in ``cache`` (which several engines may share). The same
    search or read asked again while it runs waits for the one under way instead of asking the
    engine twice (several responses of a project often search alike at once; a paid engine bills
    each call)."""

    def __init__(self, engine: SearchEngine, cache: TtlCache) -> None:
        self.engine = engine
        self.name = engine.name
        self.cache = cache
        self._running: dict[Hashable, asyncio.Task[Any]] = {}

    async def search(self, query: Query) -> list[Hit]:
        key = ("search", self.name, query.text, tuple(sorted(query.domains)), query.size,
               tuple(sorted(query.location.items())))
        hits: list[Hit] = await self._once(
            key, lambda: self.engine.search(query),
            lambda hits: 200 + sum(len(h.url) + len(h.title) + len(h.snippet) for h in hits))
        return list(hits)

    async def open(self, url: str, domains: tuple[str, ...] = ()) -> Page:
        key = ("open", self.name, url, tuple(sorted(domains)))
        page: Page = await self._once(key, lambda: self.engine.open(url, domains),
                                      lambda page: 200 + len(page.url) + len(page.title) + len(page.text))
        return page

    async def _once(self, key: Hashable, ask: Callable[[], Awaitable[Any]], size: Callable[[Any], int]) -> Any:
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(ask())
            self._running[key] = task

            def done(finished: asyncio.Task[Any]) -> None:
                del self._running[key]
                if not finished.cancelled() and finished.exception() is None:  # failures are not kept
                    self.cache.put(key, finished.result(), size(finished.result()))
            task.add_done_callback(done)
        # A caller that gives up (its response cancelled) leaves the call running for the others.
        return await asyncio.shield(task)

    async def aclose(self) -> None:
        await self.engine.aclose()
