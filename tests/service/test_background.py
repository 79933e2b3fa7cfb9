"""The background queue: projects are served in turn, each within its running quota."""

from __future__ import annotations

import asyncio

from cove.service.background import FairQueue


def _take(queue: FairQueue, count: int) -> list[str]:
    async def take() -> list[str]:
        taken = []
        for _ in range(count):
            project, response_id = await asyncio.wait_for(queue.get(), 1)
            taken.append(response_id)
            queue.done(project)
        return taken
    return asyncio.run(take())


def test_a_long_line_does_not_delay_another_project() -> None:
    queue = FairQueue(lambda _project: 10)
    for index in range(1000):
        queue.put("a", f"a{index}")
    queue.put("b", "b0")
    queue.put("c", "c0")
    assert _take(queue, 5) == ["a0", "b0", "c0", "a1", "a2"]


def test_a_project_at_its_running_quota_waits_and_others_run() -> None:
    async def scenario() -> list[str]:
        queue = FairQueue(lambda project: 1 if project == "a" else 5)
        for name in ("a0", "a1", "a2"):
            queue.put("a", name)
        first = await queue.get()  # a0 runs and holds a's only slot
        queue.put("b", "b0")
        second = await asyncio.wait_for(queue.get(), 1)
        waiting = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)  # the scenario: a getter parked while a is at its quota
        assert not waiting.done()
        queue.done("a")
        third = await asyncio.wait_for(waiting, 1)
        return [first[1], second[1], third[1]]

    assert asyncio.run(scenario()) == ["a0", "b0", "a1"]
