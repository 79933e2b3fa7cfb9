"""Provider tests talk HTTP to a scripted upstream of their own, so request counts are exact."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from cove.upstream.base import Model, ModelEvent, ModelRequest
from tests.scripted_upstream import ScriptedUpstream

Collect = Callable[[Model, ModelRequest], list[ModelEvent]]


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    """A fresh scripted upstream per test (this overrides the session-wide one)."""
    server = ScriptedUpstream().start()
    yield server
    server.stop()


async def events_of(model: Model, request: ModelRequest) -> list[ModelEvent]:
    return [event async for event in model.stream(request)]


@pytest.fixture
def collect() -> Collect:
    """Runs one model turn to its end and returns every event; the model is closed afterwards."""

    def run(model: Model, request: ModelRequest) -> list[ModelEvent]:
        async def main() -> list[ModelEvent]:
            try:
                return await asyncio.wait_for(events_of(model, request), 60)
            finally:
                await model.aclose()

        return asyncio.run(main())

    return run
