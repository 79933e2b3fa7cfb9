"""``/v1/skills``: a project's skills and their versions, and the skills a container is given.

A skill is a folder with ``SKILL.md`` (``skill_bundles.py`` checks it); each upload is a new version
numbered 1, 2, ... Rows live in the store, each version's zip in the same blob store as ``/v1/files``
bytes, and counts against the same ``file_bytes`` quota (checked and inserted as one step under the
``files`` lock). Each project sees only its own skills: another's id is answered as an unknown one.

Containers get skills from ``container_auto`` (a response's shell), ``POST /v1/containers`` or a
request's inline zip; ``resolve`` turns such a list into checked bundles before anything is made,
and ``install`` puts them in the container, read-only at ``/skills/<name>/``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import delete, func, select, update

from cove.config import Settings, parse_size
from cove.errors import InvalidRequest, NotFound
from cove.ids import new_id
from cove.sandbox.base import SKILLS_DIR
from cove.service import locks
from cove.service.containers import ContainerService
from cove.service.file_blobs import Blobs
from cove.service.objects import DeletedSkillVersion, ListPage, Skill, SkillVersion
from cove.service.pagination import Page, paginate
from cove.service.projects import ProjectPolicies
from cove.service.skill_bundles import Bundle, Limits, from_zip, to_zip
from cove.store.db import Database
from cove.store.models import ContainerRow, ContainerSkillRow, SkillRow, SkillVersionRow, StoredFileRow
from cove.tools.environment import SkillNote

MAX_SKILLS_PER_CONTAINER = 32
"""Skills one container may be given at once (each one is listed in the model's instructions)."""


def mounted(bundles: list[Bundle]) -> list[SkillNote]:
    """The skills as the model is told of them, at the paths ``install`` puts them."""
    return [SkillNote(name=bundle.name, description=bundle.description, path=f"{SKILLS_DIR}/{bundle.name}")
            for bundle in bundles]


def skill_limits(settings: Settings) -> Limits:
    return Limits(max_bytes=parse_size(settings.skill_max_bytes), max_files=settings.skill_max_files)


def skill_not_found(skill_id: str, param: str = "skill_id") -> NotFound:
    return NotFound(f"No skill found with id '{skill_id}'.", param=param, code="skill_not_found")


def parse_version(text: str, param: str) -> int | None:
    """A version as the API spells it: a positive integer, or ``latest`` (None)."""
    if text == "latest":
        return None
    if not text.isdigit() or not 1 <= int(text) <= 1_000_000_000:
        raise InvalidRequest(f"{param} must be a positive integer or 'latest': {text[:40]!r}.", param=param,
                             code="invalid_value")
    return int(text)


class SkillService:
    def __init__(self, db: Database, blobs: Blobs, containers: ContainerService, policies: ProjectPolicies,
                 limits: Limits) -> None:
        self.db = db
        self.blobs = blobs
        self.containers = containers
        self.policies = policies
        self.limits = limits

    # -- skills ----------------------------------------------------------------------------------
    async def create(self, project: str, bundle: Bundle) -> Skill:
        now = int(time.time())
        skill = SkillRow(id=new_id("skill"), project=project, name=bundle.name, description=bundle.description,
                         default_version=1, latest_version=1, created_at=now)
        await self._store(project, skill, bundle, new=True)
        return Skill.from_row(skill)

    async def list_page(self, project: str, page: Page) -> ListPage[Skill]:
        async with self.db.begin() as session:
            rows, has_more = await paginate(session, select(SkillRow).where(SkillRow.project == project),
                                            SkillRow, page)
        return ListPage.of([Skill.from_row(row) for row in rows], has_more)

    async def row(self, project: str, skill_id: str, param: str = "skill_id") -> SkillRow:
        async with self.db.begin() as session:
            row = await session.scalar(select(SkillRow).where(SkillRow.project == project, SkillRow.id == skill_id))
        if row is None:
            raise skill_not_found(skill_id, param)
        return row

    async def get(self, project: str, skill_id: str) -> Skill:
        return Skill.from_row(await self.row(project, skill_id))

    async def set_default(self, project: str, skill_id: str, version: str) -> Skill:
        number = parse_version(version, "default_version")
        async with self.db.begin() as session:
            skill = await self._locked(session, project, skill_id)
            chosen = await self._version(session, skill, number, "default_version")
            skill.default_version, skill.name, skill.description = chosen.version, chosen.name, chosen.description
            return Skill.from_row(skill)

    async def delete(self, project: str, skill_id: str) -> None:
        async with self.db.begin() as session:
            skill = await self._locked(session, project, skill_id)
            ids = list(await session.scalars(select(SkillVersionRow.id).where(SkillVersionRow.skill_id == skill.id)))
            await session.execute(delete(SkillVersionRow).where(SkillVersionRow.skill_id == skill.id))
            await session.execute(delete(SkillRow).where(SkillRow.id == skill.id))
        for version_id in ids:
            await asyncio.to_thread(self.blobs.delete, version_id)

    # -- versions --------------------------------------------------------------------------------
    async def create_version(self, project: str, skill_id: str, bundle: Bundle, *, make_default: bool) -> SkillVersion:
        skill = await self.row(project, skill_id)
        version = await self._store(project, skill, bundle, new=False, make_default=make_default)
        return SkillVersion.from_row(version)

    async def list_versions(self, project: str, skill_id: str, page: Page) -> ListPage[SkillVersion]:
        skill = await self.row(project, skill_id)
        async with self.db.begin() as session:
            rows, has_more = await paginate(session, select(SkillVersionRow).where(
                SkillVersionRow.skill_id == skill.id), SkillVersionRow, page)
        return ListPage.of([SkillVersion.from_row(row) for row in rows], has_more)

    async def get_version(self, project: str, skill_id: str, version: str) -> SkillVersion:
        skill = await self.row(project, skill_id)
        async with self.db.begin() as session:
            return SkillVersion.from_row(await self._version(session, skill, parse_version(version, "version"),
                                                             "version"))

    async def delete_version(self, project: str, skill_id: str, version: str) -> DeletedSkillVersion:
        """Removes a version other than the default (set another default first, or delete the skill)."""
        number = parse_version(version, "version")
        async with self.db.begin() as session:
            skill = await self._locked(session, project, skill_id)
            row = await self._version(session, skill, number, "version")
            if row.version == skill.default_version:
                raise InvalidRequest(f"Version {row.version} is the default of skill '{skill.id}': make another "
                                     "version the default first, or delete the skill.", param="version",
                                     code="default_version")
            await session.execute(delete(SkillVersionRow).where(SkillVersionRow.id == row.id))
            skill.latest_version = int(await session.scalar(select(func.max(SkillVersionRow.version)).where(
                SkillVersionRow.skill_id == skill.id)) or skill.default_version)
        await asyncio.to_thread(self.blobs.delete, row.id)
        return DeletedSkillVersion(id=row.id, version=str(row.version))

    async def content(self, project: str, skill_id: str, version: str | None) -> tuple[str, Iterator[bytes], int]:
        """The version's zip (the default's when ``version`` is None): its file name, bytes and size."""
        skill = await self.row(project, skill_id)
        async with self.db.begin() as session:
            number = skill.default_version if version is None else parse_version(version, "version")
            row = await self._version(session, skill, number, "version")
        return f"{row.name}.zip", await asyncio.to_thread(self.blobs.chunks, row.id), row.bytes

    async def _locked(self, session: Any, project: str, skill_id: str) -> SkillRow:
        """The skill's row, locked for the change (a version number is taken, a default moved, once)."""
        row = await session.scalar(select(SkillRow).where(SkillRow.project == project, SkillRow.id == skill_id)
                                   .with_for_update())
        if row is None:
            raise skill_not_found(skill_id)
        return row  # type: ignore[no-any-return]

    @staticmethod
    async def _version(session: Any, skill: SkillRow, number: int | None, param: str) -> SkillVersionRow:
        number = skill.latest_version if number is None else number
        row = await session.scalar(select(SkillVersionRow).where(SkillVersionRow.skill_id == skill.id,
                                                                 SkillVersionRow.version == number))
        if row is None:
            raise NotFound(f"Skill '{skill.id}' has no version {number}.", param=param, code="skill_version_not_found")
        return row  # type: ignore[no-any-return]

    async def _store(self, project: str, skill: SkillRow, bundle: Bundle, *, new: bool,
                     make_default: bool = False) -> SkillVersionRow:
        """The bundle's zip in the blob store, then its rows under the project's ``file_bytes`` quota
        (files and skills together); bytes whose rows could not be made are removed."""
        data = await asyncio.to_thread(to_zip, bundle)
        version = SkillVersionRow(id=new_id("skillver"), skill_id=skill.id, project=project, version=1,
                                  name=bundle.name, description=bundle.description, bytes=len(data),
                                  created_at=int(time.time()))
        await asyncio.to_thread(self.blobs.put, version.id, io.BytesIO(data))
        try:
            async with self.db.begin() as session:
                await locks.hold(session, "files")
                await self._check_quota(session, project, len(data))
                if new:
                    session.add(skill)
                    await session.flush()
                else:
                    skill = await self._locked(session, project, skill.id)
                    version.version = skill.latest_version + 1
                    values: dict[str, Any] = {"latest_version": version.version}
                    if make_default:
                        values.update(default_version=version.version, name=bundle.name,
                                      description=bundle.description)
                    await session.execute(update(SkillRow).where(SkillRow.id == skill.id).values(**values))
                session.add(version)
        except BaseException:
            await asyncio.to_thread(self.blobs.delete, version.id)
            raise
        return version

    async def _check_quota(self, session: Any, project: str, size: int) -> None:
        quotas = self.policies.quotas(project)
        files = await session.scalar(select(func.coalesce(func.sum(StoredFileRow.bytes), 0)).where(
            StoredFileRow.project == project))
        skills = await session.scalar(select(func.coalesce(func.sum(SkillVersionRow.bytes), 0)).where(
            SkillVersionRow.project == project))
        if int(files or 0) + int(skills or 0) + size > quotas.file_bytes:
            raise quotas.exceeded("file_bytes", f"this project may store {quotas.file_bytes} bytes of files and skills")

    # -- skills in containers ----------------------------------------------------------------------
    async def resolve(self, project: str, skills: list[dict[str, Any]], param: str) -> list[Bundle]:
        """The checked bundles a ``skills`` list names (``skill_reference`` with an optional version,
        or an inline base64 zip); a 400 or 404 names the entry (``param[i]``) that fails. They are held
        in memory until the container has them, so together they are held to one skill's size cap."""
        if len(skills) > MAX_SKILLS_PER_CONTAINER:
            raise InvalidRequest(f"At most {MAX_SKILLS_PER_CONTAINER} skills per container.", param=param)
        bundles: list[Bundle] = []
        for index, entry in enumerate(skills):
            where = f"{param}[{index}]"
            bundle = await (self._referenced(project, entry, where) if entry.get("type") == "skill_reference"
                            else self._inline(entry, where))
            if sum(known.size for known in bundles) + bundle.size > self.limits.max_bytes:
                raise InvalidRequest(f"The skills of one container may total at most {self.limits.max_bytes} bytes "
                                     "unzipped.", param=where, code="invalid_skill")
            if any(known.name == bundle.name for known in bundles):
                raise InvalidRequest(f"Two skills are named {bundle.name!r}; each is mounted at "
                                     f"{SKILLS_DIR}/<name>, so names must differ.", param=where,
                                     code="duplicate_skill_name")
            bundles.append(bundle)
        return bundles

    async def _referenced(self, project: str, entry: dict[str, Any], where: str) -> Bundle:
        skill_id = entry.get("skill_id")
        if not isinstance(skill_id, str):
            raise InvalidRequest("A skill_reference needs a 'skill_id'.", param=f"{where}.skill_id")
        skill = await self.row(project, skill_id, f"{where}.skill_id")
        given = entry.get("version")
        number = skill.default_version if given is None else parse_version(str(given), f"{where}.version")
        async with self.db.begin() as session:
            row = await self._version(session, skill, number, f"{where}.version")
        data = await asyncio.to_thread(self.blobs.read, row.id)
        return await asyncio.to_thread(from_zip, io.BytesIO(data), self.limits, where)

    async def _inline(self, entry: dict[str, Any], where: str) -> Bundle:
        """An ``inline`` skill: its zip decoded and checked; the skill is what its ``SKILL.md`` says,
        and the request's ``name`` must agree (the folder it is mounted at)."""
        source = entry.get("source")
        if entry.get("type") != "inline" or not isinstance(source, dict):
            raise InvalidRequest("A skill is {'type': 'skill_reference', 'skill_id', 'version'} or "
                                 "{'type': 'inline', 'name', 'description', 'source'}.", param=where)
        if source.get("type") != "base64" or source.get("media_type") != "application/zip":
            raise InvalidRequest("An inline skill's source must be {'type': 'base64', 'media_type': "
                                 "'application/zip', 'data'}.", param=f"{where}.source")
        data = source.get("data")
        if not isinstance(data, str) or len(data) > 2 * self.limits.max_bytes:
            raise InvalidRequest("An inline skill's data must be a base64 zip within the skill size cap.",
                                 param=f"{where}.source.data")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("An inline skill's data is not valid base64.", param=f"{where}.source.data",
                                 code="invalid_skill") from None
        bundle = await asyncio.to_thread(from_zip, io.BytesIO(raw), self.limits, f"{where}.source.data")
        if entry.get("name") not in (None, bundle.name):
            raise InvalidRequest(f"The inline skill's name {entry.get('name')!r} differs from its SKILL.md's "
                                 f"{bundle.name!r}.", param=f"{where}.name", code="invalid_skill")
        return bundle

    async def install(self, project: str, container_id: str, bundles: list[Bundle],
                      response_id: str | None = None) -> list[SkillNote]:
        """Puts each skill in the container, read-only at ``/skills/<name>/``, and notes it there."""
        async with self.containers.use(project, container_id, response_id) as sandbox:
            for bundle in bundles:
                await sandbox.add_skill(bundle.name, bundle.files)
        notes = mounted(bundles)
        async with self.db.begin() as session:
            await session.execute(delete(ContainerSkillRow).where(
                ContainerSkillRow.container_id == container_id,
                ContainerSkillRow.name.in_([note.name for note in notes])))
            session.add_all(ContainerSkillRow(container_id=container_id, **note.model_dump()) for note in notes)
        return notes

    async def in_container(self, project: str, container_id: str) -> list[SkillNote]:
        """The skills put in the project's container so far (none for another project's)."""
        async with self.db.begin() as session:
            rows = await session.scalars(select(ContainerSkillRow).join(
                ContainerRow, ContainerRow.id == ContainerSkillRow.container_id).where(
                ContainerSkillRow.container_id == container_id, ContainerRow.project == project)
                .order_by(ContainerSkillRow.seq))
            return [SkillNote(name=row.name, description=row.description, path=row.path) for row in rows]
