"""The container a response's hosted tools run in.

Named explicitly (``container_reference``, a top-level ``container_id``), followed from the chain
or conversation (``container_auto``), or made on first use with the ``container_auto`` options.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from cove.sandbox.base import Sandbox
from cove.service.containers import ContainerService
from cove.service.files import FileService


@dataclass
class Workspace:
    containers: ContainerService
    project: str
    name: str
    container_id: str | None = None
    auto: dict[str, Any] = field(default_factory=dict)
    """``container_auto`` options (memory_limit, network_policy) for a container made on first use."""
    on_container: Callable[[str], None] | None = None
    """Told the container id once one is known (the response reports it)."""
    files: FileService | None = None
    response_id: str | None = None
    """The response whose tools run here (for the audit trail)."""
    citations: list[dict[str, Any]] = field(default_factory=list)
    """``container_file_citation`` annotations for files the tools wrote, for the final answer."""
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def container_id_now(self) -> str:
        """The container's id, making the container if this response has none yet."""
        async with self._lock:
            if self.container_id is None:
                row = await self.containers.create(
                    self.project, name=self.name, image=None, memory_limit=self.auto.get("memory_limit") or "1g",
                    cpu_limit=None, expires_minutes=None, network_policy=self.auto.get("network_policy") or {})
                self.container_id = row.id
                if self.on_container is not None:
                    self.on_container(row.id)
            return self.container_id

    async def cite(self, paths: list[str]) -> None:
        """Registers files the tools wrote as container files, to cite them in the answer."""
        if self.files is None or self.container_id is None:
            return
        rows = await self.files.rows_for(self.project, self.container_id, paths)
        known = {c["file_id"] for c in self.citations}
        self.citations.extend({"type": "container_file_citation", "container_id": self.container_id,
                               "file_id": row.id, "filename": row.path.rsplit("/", 1)[-1],
                               "start_index": 0, "end_index": 0} for row in rows if row.id not in known)

    @asynccontextmanager
    async def sandbox(self) -> AsyncIterator[Sandbox]:
        """The container, kept from expiring while a tool uses it."""
        container_id = await self.container_id_now()
        async with self.containers.use(self.project, container_id, self.response_id) as sandbox:
            yield sandbox
