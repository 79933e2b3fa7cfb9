"""The Files API service on a real store and data dir: expired files are gone at once and swept later."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from sqlalchemy import update

from cove.config import Settings
from cove.errors import NotFound
from cove.service.file_blobs import LocalBlobs
from cove.service.pagination import Page
from cove.service.project_files import ProjectFileService
from cove.service.projects import ProjectPolicies
from cove.store.db import Database
from cove.store.models import StoredFileRow


def test_expired_files_are_gone_then_swept(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'cove.db'}")
        await db.migrate()
        blobs = LocalBlobs(tmp_path / "files")
        service = ProjectFileService(db, blobs, None, ProjectPolicies.load(None, Settings(data_dir=tmp_path)))  # type: ignore[arg-type]
        kept = await service.create("p", "kept.txt", "user_data", None, io.BytesIO(b"kept"))
        going = await service.create("p", "going.txt", "user_data", 3600, io.BytesIO(b"going"))
        assert await service.remove_expired() == []
        async with db.begin() as session:  # an hour and a second later
            await session.execute(update(StoredFileRow).where(StoredFileRow.id == going.id).values(
                expires_at=StoredFileRow.created_at - 1))
        with pytest.raises(NotFound):
            await service.get("p", going.id)
        assert (tmp_path / "files" / going.id).exists()
        assert await service.remove_expired() == [going.id]
        assert not (tmp_path / "files" / going.id).exists()
        assert [f.id for f in (await service.list_page("p", Page(), None)).data] == [kept.id]
        await db.close()

    asyncio.run(scenario())
