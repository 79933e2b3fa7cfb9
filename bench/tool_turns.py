"""What Cove adds per hosted-tool turn, beyond model time and command time.

The real agent loop, response builder, store (SQLite) and container engine run in this process;
the model is an in-process script that answers instantly (model time ~0) with a shell call per turn,
then text. Per tool turn overhead = (response wall time - turns x the command's own time) / turns,
where the command's own time is ``true`` run directly through the same sandbox, measured in the
same run. Prints p50/p95 over several responses. Target: p50 <= 5 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from percentiles import p50_p95
from rich.console import Console

from cove.agent.request import CreateParams
from cove.config import Settings
from cove.sandbox.base import Command
from cove.sandbox.images.store import ImageStore
from cove.sandbox.linux.engine import LinuxEngine
from cove.service.containers import ContainerService
from cove.service.file_blobs import blobs_for
from cove.service.files import FileService
from cove.service.project_files import ProjectFileService
from cove.service.projects import ProjectPolicies
from cove.service.responses import ResponseService
from cove.service.secrets import SecretKeeper
from cove.store.db import Database
from cove.upstream.base import Finish, Model, ModelEvent, ModelRequest, TextDelta, ToolCallDelta, ToolCallStart, Usage

TURNS = 20
RESPONSES = 15
TARGET_MS = 5.0
console = Console()


class InstantModel(Model):
    """Calls the shell with ``true`` until it has done so ``TURNS`` times, then answers."""

    context_window = 1_000_000

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        done = sum(1 for item in request.input if item.get("type") == "function_call")
        if done < TURNS:
            yield ToolCallStart(0, f"call_{done}", "shell")
            yield ToolCallDelta(0, json.dumps({"commands": ["true"]}))
            yield Finish("tool_calls", Usage(1, 1))
        else:
            yield TextDelta("done")
            yield Finish("stop", Usage(1, 1))


class InstantRegistry:
    async def resolve(self, name: str) -> tuple[Model, str]:
        return InstantModel(), name


async def main() -> int:
    data = Path(tempfile.mkdtemp(prefix="cove-bench-tools-", dir="/var/tmp"))
    settings = Settings(data_dir=data, images_dir=Path(os.environ.get("COVE_IMAGES_DIR", "/var/lib/cove/images")),
                        warm_pool=0)
    db = Database(settings.db_url)
    await db.migrate()
    policies, secrets = ProjectPolicies.load(None, settings), SecretKeeper(settings.secrets_key_path)
    engine = LinuxEngine(settings, ImageStore(settings.image_root, settings.subuid_base))
    containers = ContainerService(db, engine, settings, policies=policies, secrets=secrets)
    files = FileService(db, containers)
    service = ResponseService(db, InstantRegistry(), containers, files, settings,  # type: ignore[arg-type]
                              policies=policies, secrets=secrets,
                              project_files=ProjectFileService(db, blobs_for(settings), files, policies))
    await engine.start()
    try:
        row = await containers.create("bench", name="tools", image=None, memory_limit="1g", cpu_limit=None,
                                      expires_minutes=None, network_policy={})
        async with containers.use("bench", row.id) as sandbox:
            for _ in range(20):
                await sandbox.exec(Command("true", 10_000, 1000))
            command_ms = []
            for _ in range(200):
                start = time.perf_counter()
                await sandbox.exec(Command("true", 10_000, 1000))
                command_ms.append((time.perf_counter() - start) * 1000)
        command = statistics.median(command_ms)
        per_turn = []
        for index in range(RESPONSES + 2):
            params = CreateParams(model="instant", input="go", tools=[{"type": "shell"}], container_id=row.id)
            start = time.perf_counter()
            run = await service.create("bench", params)
            final = await service.wait(run)
            wall = (time.perf_counter() - start) * 1000
            assert final["status"] == "completed", final
            if index >= 2:  # warm-up
                per_turn.append((wall - TURNS * command) / TURNS)
    finally:
        await engine.close()
        await db.close()
        shutil.rmtree(data, ignore_errors=True)
    p50, p95 = p50_p95(per_turn)
    verdict = "[green]PASS[/]" if p50 <= TARGET_MS else "[red]MISS[/]"
    console.print(f"command `true` through the sandbox: p50 {command:.2f} ms (n=200)")
    console.print(f"Cove's time per hosted tool turn beyond model and command time ({RESPONSES} responses x "
                  f"{TURNS} turns): p50 {p50:.2f} ms, p95 {p95:.2f} ms; target p50 <= {TARGET_MS:g} ms {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
