"""``/v1/files``: a project's uploaded files. Metadata in the store, bytes in a blob store
(``file_blobs.py``); each project sees only its own (another's id is answered as an unknown one).

Files given ``expires_after`` are gone for every purpose once they expire: they are filtered out of
every read at once, and a sweep every ``COVE_EXPIRY_CHECK_SECONDS`` removes their rows and bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO

from sqlalchemy import ColumnElement, delete, func, or_, select

from cove.errors import InvalidRequest, NotFound
from cove.ids import new_id
from cove.service import locks
from cove.service.file_blobs import Blobs
from cove.service.files import DATA_DIR, FileService
from cove.service.objects import ContainerFile, FileObject, ListPage
from cove.service.pagination import Page, paginate
from cove.service.projects import ProjectPolicies
from cove.service.sweeper import Sweeper
from cove.store.db import Database
from cove.store.models import SkillVersionRow, StoredFileRow

log = logging.getLogger(__name__)

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
"""What the SDK's ``FilePurpose`` allows an upload to say."""
EXPIRY_SECONDS = (3600, 2_592_000)
"""The range OpenAI allows ``expires_after.seconds``: an hour to thirty days."""
MAX_FILENAME = 1024
_SWEEP_BATCH = 500


def _live(now: int) -> ColumnElement[bool]:
    return or_(StoredFileRow.expires_at.is_(None), StoredFileRow.expires_at > now)


def not_found(file_id: str, param: str) -> NotFound:
    return NotFound(f"No file found with id '{file_id}'.", param=param, code="file_not_found")


def check_upload(filename: str, purpose: str | None, expires_anchor: str | None,
                 expires_seconds: str | None) -> int | None:
    """The upload's form fields, checked as OpenAI checks them; returns the expiry in seconds (or None)."""
    if purpose is None:
        raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose",
                             code="missing_required_parameter")
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(f"Invalid value for 'purpose': expected one of {', '.join(UPLOAD_PURPOSES)}.",
                             param="purpose", code="invalid_value")
    if len(filename) > MAX_FILENAME:
        raise InvalidRequest(f"The file's name is longer than {MAX_FILENAME} characters.", param="file")
    if expires_anchor is None and expires_seconds is None:
        return None
    if expires_anchor != "created_at":
        raise InvalidRequest("expires_after.anchor must be 'created_at'.", param="expires_after.anchor",
                             code="invalid_value")
    low, high = EXPIRY_SECONDS
    if expires_seconds is None or not expires_seconds.isdigit() or not low <= int(expires_seconds) <= high:
        raise InvalidRequest(f"expires_after.seconds must be between {low} and {high}.",
                             param="expires_after.seconds", code="invalid_value")
    return int(expires_seconds)


class ProjectFileService:
    def __init__(self, db: Database, blobs: Blobs, container_files: FileService, policies: ProjectPolicies) -> None:
        self.db = db
        self.blobs = blobs
        self.container_files = container_files
        self.policies = policies
        self._sweeper: Sweeper | None = None

    async def create(self, project: str, filename: str, purpose: str, expires_seconds: int | None,
                     source: IO[bytes]) -> FileObject:
        """Stores the bytes, then the row, under the project's ``file_bytes`` quota (checked and
        inserted as one step); bytes whose row could not be made are removed."""
        size = source.seek(0, 2)
        now = int(time.time())
        row = StoredFileRow(id=new_id("file"), project=project, filename=filename, purpose=purpose, bytes=size,
                            created_at=now, expires_at=None if expires_seconds is None else now + expires_seconds)
        await asyncio.to_thread(self.blobs.put, row.id, source)
        try:
            async with self.db.begin() as session:
                await locks.hold(session, "files")
                quotas = self.policies.quotas(project)
                held = await session.scalar(select(func.coalesce(func.sum(StoredFileRow.bytes), 0)).where(
                    StoredFileRow.project == project))
                skills = await session.scalar(select(func.coalesce(func.sum(SkillVersionRow.bytes), 0)).where(
                    SkillVersionRow.project == project))  # skills' zips share the quota (service/skills.py)
                if int(held or 0) + int(skills or 0) + size > quotas.file_bytes:
                    raise quotas.exceeded("file_bytes", f"this project may store {quotas.file_bytes} bytes of files")
                session.add(row)
        except BaseException:
            await asyncio.to_thread(self.blobs.delete, row.id)
            raise
        return FileObject.from_row(row)

    def start_expiry(self, every: float) -> None:
        self._sweeper = Sweeper("file expiry", self._sweep, every)
        self._sweeper.start()

    async def stop_expiry(self) -> None:
        if self._sweeper is not None:
            await self._sweeper.stop()

    async def _sweep(self) -> bool:
        return len(await self.remove_expired()) == _SWEEP_BATCH

    async def remove_expired(self) -> list[str]:
        """Removes up to a batch of expired files, rows first (so none is read half-removed), then bytes."""
        async with self.db.begin() as session:
            expired = list(await session.scalars(select(StoredFileRow.id).where(
                StoredFileRow.expires_at <= int(time.time())).order_by(StoredFileRow.seq).limit(_SWEEP_BATCH)))
            if expired:
                await session.execute(delete(StoredFileRow).where(StoredFileRow.id.in_(expired)))
        for file_id in expired:
            await asyncio.to_thread(self.blobs.delete, file_id)
        return expired

    async def list_page(self, project: str, page: Page, purpose: str | None) -> ListPage[FileObject]:
        query = select(StoredFileRow).where(StoredFileRow.project == project, _live(int(time.time())))
        if purpose is not None:
            query = query.where(StoredFileRow.purpose == purpose)
        async with self.db.begin() as session:
            rows, has_more = await paginate(session, query, StoredFileRow, page)
        return ListPage.of([FileObject.from_row(row) for row in rows], has_more)

    async def row(self, project: str, file_id: str, param: str = "file_id") -> StoredFileRow:
        """The project's live file ``file_id``; anything else is a 404 naming ``param``."""
        async with self.db.begin() as session:
            row = await session.scalar(select(StoredFileRow).where(
                StoredFileRow.project == project, StoredFileRow.id == file_id, _live(int(time.time()))))
        if row is None:
            raise not_found(file_id, param)
        return row

    async def get(self, project: str, file_id: str) -> FileObject:
        return FileObject.from_row(await self.row(project, file_id))

    async def content(self, project: str, file_id: str) -> tuple[FileObject, Iterator[bytes]]:
        """The file and its bytes as a blocking iterator (opened now, so missing bytes fail here)."""
        row = await self.row(project, file_id)
        return FileObject.from_row(row), await asyncio.to_thread(self.blobs.chunks, row.id)

    async def bytes_of(self, row: StoredFileRow) -> bytes:
        """The file's bytes, whole (callers bound ``row.bytes`` first)."""
        return await asyncio.to_thread(self.blobs.read, row.id)

    async def delete(self, project: str, file_id: str) -> None:
        row = await self.row(project, file_id)
        async with self.db.begin() as session:
            await session.execute(delete(StoredFileRow).where(StoredFileRow.id == row.id))
        await asyncio.to_thread(self.blobs.delete, row.id)

    async def check(self, project: str, file_ids: list[str], param: str) -> None:
        """Each id names a live file of the project (a 404 names the first that does not: ``param[i]``)."""
        for index, file_id in enumerate(file_ids):
            await self.row(project, file_id, f"{param}[{index}]")

    async def copy_to_container(self, project: str, container_id: str, file_id: str,
                                param: str = "file_id") -> ContainerFile:
        """The file copied to ``/mnt/data/<its name>`` in the container, as a container file."""
        row = await self.row(project, file_id, param)
        chunks = await asyncio.to_thread(self.blobs.chunks, row.id)
        name = PurePosixPath(row.filename).name
        name = row.id if name in ("", ".", "..") else name
        return await self.container_files.upload(project, container_id, name, f"{DATA_DIR}/{name}", chunks)

