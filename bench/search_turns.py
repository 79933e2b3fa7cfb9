"""What Cove adds per web search turn, beyond the model's and the engine's own time.

The real response service, agent loop, response builder, ``web_search`` tool and store (SQLite) run in
this process; the model is an in-process script that answers instantly (model time ~0) with a
``web_search`` call per turn, then text citing a source. The engine is timed around each call, so per
search turn overhead = (response wall time - the engine's time in that response) / turns: item and
event building, numbering sources, cutting results to ``search_context_size``, the context the
model reads next, the stored response and the citations.

``search_turn_overhead(engine)`` runs it with any engine (``bench/web_search.py`` calls it with a real
one); run alone, this script uses an engine that answers at once with ten results. No container,
root or network is needed. Target: p50 <= 5 ms.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from percentiles import p50_p95
from rich.console import Console

from cove.agent.request import CreateParams
from cove.config import Settings
from cove.search.base import Hit, Page, Query, SearchEngine
from cove.service.containers import ContainerService
from cove.service.file_blobs import blobs_for
from cove.service.files import FileService
from cove.service.project_files import ProjectFileService
from cove.service.projects import ProjectPolicies
from cove.service.responses import ResponseService
from cove.service.secrets import SecretKeeper
from cove.service.web_search import WebSearchEngines
from cove.store.db import Database
from cove.upstream.base import Finish, Model, ModelEvent, ModelRequest, TextDelta, ToolCallDelta, ToolCallStart, Usage

TURNS = 20
RESPONSES = 15
TARGET_MS = 5.0
console = Console()


class InstantModel(Model):
    """Searches until it has done so ``TURNS`` times, then answers citing the first source."""

    context_window = 10_000_000

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        done = sum(1 for item in request.input if item.get("type") == "function_call")
        if done < TURNS:
            yield ToolCallStart(0, f"call_{done}", "web_search")
            yield ToolCallDelta(0, json.dumps({"query": f"pandas release notes {done}"}))
            yield Finish("tool_calls", Usage(1, 1))
        else:
            yield TextDelta("pandas 2.2 is out [1].")
            yield Finish("stop", Usage(1, 1))


class InstantRegistry:
    async def resolve(self, name: str) -> tuple[Model, str]:
        return InstantModel(), name


class TenResults(SearchEngine):
    """Answers every query at once with ten results (snippets of 600 characters)."""

    name = "instant"

    async def search(self, query: Query) -> list[Hit]:
        return [Hit(f"https://docs.example.org/{query.text.replace(' ', '-')}/{i}", f"Result {i}", "word " * 120)
                for i in range(10)]

    async def open(self, url: str, domains: tuple[str, ...] = ()) -> Page:
        return Page(url, "page", "word " * 2000)


class Timed(SearchEngine):
    """Another engine, with the time spent in it added up."""

    def __init__(self, engine: SearchEngine) -> None:
        self.engine = engine
        self.name = engine.name
        self.seconds = 0.0

    async def search(self, query: Query) -> list[Hit]:
        start = time.perf_counter()
        try:
            return await self.engine.search(query)
        finally:
            self.seconds += time.perf_counter() - start

    async def open(self, url: str, domains: tuple[str, ...] = ()) -> Page:
        start = time.perf_counter()
        try:
            return await self.engine.open(url, domains)
        finally:
            self.seconds += time.perf_counter() - start


async def search_turn_overhead(engine: SearchEngine, turns: int = TURNS, responses: int = RESPONSES) -> list[float]:
    """Milliseconds Cove adds per search turn, one sample per response (after two untimed)."""
    timed = Timed(engine)
    data = Path(tempfile.mkdtemp(prefix="cove-bench-search-", dir="/var/tmp"))
    settings = Settings(data_dir=data, warm_pool=0)
    db = Database(settings.db_url)
    await db.migrate()
    policies, secrets = ProjectPolicies.load(None, settings), SecretKeeper(settings.secrets_key_path)
    containers = ContainerService(db, None, settings, policies=policies, secrets=secrets)  # type: ignore[arg-type]
    files = FileService(db, containers)
    service = ResponseService(db, InstantRegistry(), containers, files, settings,  # type: ignore[arg-type]
                              policies=policies, secrets=secrets,
                              project_files=ProjectFileService(db, blobs_for(settings), files, policies),
                              search=WebSearchEngines(lambda _project: "index:bench", lambda _spec: timed))
    samples = []
    try:
        for index in range(responses + 2):
            timed.seconds = 0.0
            start = time.perf_counter()
            run = await service.create("bench", CreateParams(model="instant", input="What is new in pandas?",
                                                             tools=[{"type": "web_search"}]))
            final = await service.wait(run)
            wall = time.perf_counter() - start
            assert final["status"] == "completed", final
            assert final["output"][-1]["content"][0]["annotations"], "the answer cites its source"
            if index >= 2:  # warm-up
                samples.append((wall - timed.seconds) * 1000 / turns)
    finally:
        await db.close()
        shutil.rmtree(data, ignore_errors=True)
    return samples


def report(samples: list[float], what: str) -> None:
    p50, p95 = p50_p95(samples)
    verdict = "[green]PASS[/]" if p50 <= TARGET_MS else "[red]MISS[/]"
    console.print(f"Cove's time per web search turn beyond model and engine time ({what}; {len(samples)} responses "
                  f"x {TURNS} turns): p50 {p50:.2f} ms, p95 {p95:.2f} ms; target p50 <= {TARGET_MS:g} ms {verdict}")


async def main() -> int:
    report(await search_turn_overhead(TenResults()), "an instant engine, 10 results a search")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
