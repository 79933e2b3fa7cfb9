"""The container a response's hosted tools run in, as the service provides it to the agent.

Named explicitly (``container_reference``, a top-level ``container_id``), followed from the chain
or conversation (``container_auto``), or made on first use with the ``container_auto`` options.
Every operation uses the container through ``ContainerService.use``: the project's own container,
running, kept from expiring meanwhile, and its commands audited with the response's id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from cove.errors import InvalidRequest
from cove.sandbox.base import Sandbox
from cove.service.containers import ContainerService
from cove.service.files import FileService
from cove.service.project_files import ProjectFileService
from cove.service.skill_bundles import Bundle
from cove.service.skills import SkillService
from cove.tools.workspace import Workspace


class ContainerWorkspace(Workspace):
    def __init__(self, containers: ContainerService, files: FileService, project: str, *, response_id: str,
                 project_files: ProjectFileService, container_id: str | None, auto: dict[str, Any],
                 on_container: Callable[[str], None], image: str | None = None,
                 skills: tuple[SkillService, list[Bundle]] | None = None) -> None:
        super().__init__()
        self.containers = containers
        self.files = files
        self.project_files = project_files
        self.project = project
        self.response_id = response_id
        self._container_id = container_id
        self.auto = auto
        """``container_auto`` options (memory_limit, network_policy, file_ids) for a container made on first use."""
        self.on_container = on_container
        """Told the id of a container made on first use (the response reports it)."""
        self.image = image
        """The image of a container made on first use (None: the server's default; the desktop image
        when the request's computer tool needs a display)."""
        self.skills = skills
        """The service and the checked skills ``container_auto`` asked for: put in the container on first use
        (a new one or the chain's), so the skills the model was told of are there."""
        self._lock = asyncio.Lock()

    async def container_id(self) -> str:
        async with self._lock:
            if self._container_id is None:
                container = await self.containers.create(
                    self.project, name=f"auto-{self.response_id}", image=self.image,
                    memory_limit=self.auto.get("memory_limit") or "1g", cpu_limit=None, expires_minutes=None,
                    network_policy=self.auto.get("network_policy") or {})
                self._container_id = container.id
                self.on_container(container.id)
                for index, file_id in enumerate(self.auto.get("file_ids") or []):
                    await self.project_files.copy_to_container(self.project, container.id, file_id,
                                                               f"file_ids[{index}]")
            if self.skills is not None:
                service, bundles = self.skills
                await service.install(self.project, self._container_id, bundles, self.response_id)
                self.skills = None
            return self._container_id

    async def admit(self) -> None:
        """Refuses now what the first tool call would be refused: containers for a project without
        them, or one made on first use when the project's quotas have no room for it."""
        if self._container_id is None:
            await self.containers.admit(self.project, self.auto.get("memory_limit") or "1g", self.image)
        else:
            self.containers.policies.check_containers(self.project)

    async def check_display(self, param: str) -> None:
        """Refuses now, naming the computer tool (``param``), a named or followed container whose image
        has no display (one made on first use gets the desktop image)."""
        if self._container_id is None:
            return
        async with self._sandbox() as sandbox:
            if not sandbox.has_display:
                raise InvalidRequest(
                    f"The computer tool ({param}) needs a container with a display, and container "
                    f"{self._container_id!r} has none: its image is not a desktop image. Create the container "
                    "from a desktop image, or let the request make one (container: auto).", param=param,
                    code="no_display")

    @asynccontextmanager
    async def _sandbox(self) -> AsyncIterator[Sandbox]:
        container_id = await self.container_id()
        async with self.containers.use(self.project, container_id, self.response_id) as sandbox:
            yield sandbox

    async def cite(self, paths: list[str]) -> None:
        """Registers the files as container files (they get ids) and cites each once."""
        if self._container_id is None:
            return
        rows = await self.files.rows_for(self.project, self._container_id, paths)
        known = {citation["file_id"] for citation in self.citations}
        self.citations.extend({"type": "container_file_citation", "container_id": self._container_id,
                               "file_id": row.id, "filename": row.path.rsplit("/", 1)[-1],
                               "start_index": 0, "end_index": 0} for row in rows if row.id not in known)
