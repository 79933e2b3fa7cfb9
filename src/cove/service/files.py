"""Container files: uploads, the files a container writes under /mnt/data, and their content.

The disk is the truth for what exists; the store gives each file a stable id. Listing reconciles
the two, so files made by commands inside the container appear with ``source: "assistant"``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import PurePosixPath

from sqlalchemy import delete, select, update

from cove.errors import NotFound
from cove.ids import new_id
from cove.sandbox.base import normalize_path
from cove.service.containers import ContainerService
from cove.service.objects import ContainerFile, ListPage
from cove.service.pagination import Page, paginate
from cove.store.bulk import insert_rows
from cove.store.db import Database
from cove.store.models import ContainerFileRow

DATA_DIR = "/mnt/data"


class FileService:
    def __init__(self, db: Database, containers: ContainerService) -> None:
        self.containers = containers
        self.db = db

    async def upload(self, project: str, container_id: str, filename: str, path: str | None,
                     chunks: Iterator[bytes]) -> ContainerFile:
        target = str(normalize_path(path if path else f"{DATA_DIR}/{PurePosixPath(filename).name or 'upload'}"))
        async with self.containers.use(project, container_id) as sandbox:
            size = await (await sandbox.files()).write(target, chunks)
        return ContainerFile.from_row(await self._record(container_id, target, size, "user"))

    async def _record(self, container_id: str, path: str, size: int, source: str) -> ContainerFileRow:
        async with self.db.begin() as session:
            row = await session.scalar(select(ContainerFileRow).where(
                ContainerFileRow.container_id == container_id, ContainerFileRow.path == path))
            if row is None:
                row = ContainerFileRow(id=new_id("cfile"), container_id=container_id, path=path, bytes=size,
                                       source=source, created_at=int(time.time()))
                session.add(row)
            else:
                row.bytes = size
        return row

    async def sync(self, project: str, container_id: str) -> None:
        """Registers files that appeared under /mnt/data and forgets records of vanished files.

        The walk is bounded (``WALK_VISITS``): a file it did not reach is kept if it still exists.
        Records are read as plain rows and written in bulk, since a container may hold 10,000 files
        and the ORM would spend seconds of the event loop on them (~150 us a row).
        """
        async with self.containers.use(project, container_id) as sandbox:
            fs = await sandbox.files()
            on_disk = {entry.path: entry.size for entry in await fs.walk_files(DATA_DIR)}
            async with self.db.begin() as session:
                known = {path: (seq, size) for seq, path, size in await session.execute(select(
                    ContainerFileRow.seq, ContainerFileRow.path, ContainerFileRow.bytes).where(
                    ContainerFileRow.container_id == container_id))}
                gone = [seq for path, (seq, _size) in known.items()
                        if path not in on_disk and await fs.stat(path) is None]
                if gone:
                    await session.execute(delete(ContainerFileRow).where(ContainerFileRow.seq.in_(gone)))
                resized = [{"seq": seq, "bytes": on_disk[path]} for path, (seq, size) in known.items()
                           if path in on_disk and on_disk[path] != size]
                if resized:
                    await session.execute(update(ContainerFileRow), resized)
                now = int(time.time())
                await insert_rows(session, ContainerFileRow, (
                    {"id": new_id("cfile"), "container_id": container_id, "path": path, "bytes": size,
                     "source": "assistant", "created_at": now}
                    for path, size in on_disk.items() if path not in known))

    async def list_page(self, project: str, container_id: str, page: Page) -> ListPage[ContainerFile]:
        await self.sync(project, container_id)
        query = select(ContainerFileRow).where(ContainerFileRow.container_id == container_id)
        async with self.db.begin() as session:
            rows, has_more = await paginate(session, query, ContainerFileRow, page)
        return ListPage.of([ContainerFile.from_row(row) for row in rows], has_more)

    async def rows_for(self, project: str, container_id: str, paths: list[str]) -> list[ContainerFileRow]:
        """The records of these paths (after registering new files), in the order given."""
        await self.sync(project, container_id)
        async with self.db.begin() as session:
            rows = {row.path: row for row in await session.scalars(select(ContainerFileRow).where(
                ContainerFileRow.container_id == container_id, ContainerFileRow.path.in_(paths)))}
        return [rows[path] for path in paths if path in rows]

    async def get(self, project: str, container_id: str, file_id: str) -> ContainerFile:
        return ContainerFile.from_row(await self._row(project, container_id, file_id))

    async def _row(self, project: str, container_id: str, file_id: str) -> ContainerFileRow:
        await self.containers.get(project, container_id)
        async with self.db.begin() as session:
            row = await session.scalar(select(ContainerFileRow).where(
                ContainerFileRow.container_id == container_id, ContainerFileRow.id == file_id))
        if row is None:
            raise NotFound(f"No file found with id '{file_id}' in container '{container_id}'.",
                           param="file_id", code="file_not_found")
        return row

    async def delete(self, project: str, container_id: str, file_id: str) -> None:
        row = await self._row(project, container_id, file_id)
        async with self.containers.use(project, container_id) as sandbox:
            await (await sandbox.files()).delete(row.path)
        async with self.db.begin() as session:
            await session.execute(delete(ContainerFileRow).where(ContainerFileRow.id == row.id))

    async def content(self, project: str, container_id: str, file_id: str) -> tuple[int, AsyncIterator[bytes]]:
        """The file's size and a stream of its bytes, opened now (so a missing file fails early)."""
        row = await self._row(project, container_id, file_id)
        async with self.containers.use(project, container_id) as sandbox:
            return await (await sandbox.files()).stream(row.path)
