"""``/v1/skills``: OpenAI's Skills API (create from files or a zip, list, retrieve, set the default
version, delete, versions, content), per project (``docs/skills.md``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import UploadFile

from cove.api import multipart
from cove.api.auth import project_of
from cove.errors import InvalidRequest
from cove.sandbox.base import SkillFile
from cove.service.objects import Deleted, DeletedSkillVersion, ListPage, Skill, SkillVersion
from cove.service.pagination import Page
from cove.service.skill_bundles import Bundle, bundle_of, from_zip
from cove.service.skills import SkillService

router = APIRouter(prefix="/v1/skills", tags=["skills"])
Project = Annotated[str, Depends(project_of)]
_ZIP_MAGIC = b"PK\x03\x04"

_UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"], "properties": {
        "files": {"type": "string", "format": "binary",
                  "description": "A zip of the skill's folder, or one of its files (as `files[]`, the name "
                                 "its path in the folder)."},
        "default": {"type": "string", "enum": ["true", "false"],
                    "description": "New versions only: make it the default."}}}}}}}
"""The form the routes parse themselves, described for /openapi.json (and the fuzzer that reads it)."""


class SkillUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default_version: str


def _service(request: Request) -> SkillService:
    service: SkillService = request.app.state.skills
    return service


async def _bundle(request: Request) -> tuple[Bundle, str | None]:
    """The upload's checked bundle, and its ``default`` field: a single zip, or the folder's files."""
    service = _service(request)
    limits = service.limits
    form = await multipart.form(request, max_files=limits.max_files, param="files")
    try:
        parts = multipart.file_parts(form, "files[]", "files")
        if not parts:
            raise InvalidRequest("Missing required parameter: 'files' (a zip, or the skill's files).",
                                 param="files", code="missing_required_parameter")
        return await asyncio.to_thread(_read_bundle, parts, service), multipart.field(form, "default")
    finally:
        await form.close()


def _read_bundle(parts: list[UploadFile], service: SkillService) -> Bundle:
    """Blocking (reads the spooled parts, inflates a zip): run in a worker thread."""
    limits = service.limits
    if len(parts) == 1:
        head = parts[0].file.read(4)
        parts[0].file.seek(0)
        if head == _ZIP_MAGIC:
            return from_zip(parts[0].file, limits, "files")
    files: list[SkillFile] = []
    budget = limits.max_bytes
    for part in parts:
        data = part.file.read(budget + 1)
        budget -= len(data)
        if budget < 0:
            raise InvalidRequest(f"A skill's files may total at most {limits.max_bytes} bytes.", param="files",
                                 code="invalid_skill")
        files.append(SkillFile(part.filename or "", data))
    return bundle_of(files, limits, "files")


def _is_default(value: str | None) -> bool:
    if value not in (None, "true", "false"):
        raise InvalidRequest("'default' must be true or false.", param="default", code="invalid_value")
    return value == "true"


def _zip_response(name: str, chunks: Iterator[bytes], size: int) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="application/zip", headers={
        "Content-Length": str(size), "Content-Disposition": f'attachment; filename="{name}"'})


@router.post("", openapi_extra=_UPLOAD_SCHEMA)
async def create_skill(request: Request, project: Project) -> Skill:
    bundle, _default = await _bundle(request)
    return await _service(request).create(project, bundle)


@router.get("")
async def list_skills(request: Request, project: Project, after: str | None = None,
                      limit: Annotated[int, Query()] = 20,
                      order: Literal["asc", "desc"] = "desc") -> ListPage[Skill]:
    return await _service(request).list_page(project, Page(after, limit, order))


@router.get("/{skill_id}")
async def retrieve_skill(skill_id: str, request: Request, project: Project) -> Skill:
    return await _service(request).get(project, skill_id)


@router.post("/{skill_id}")
async def update_skill(skill_id: str, body: SkillUpdate, request: Request, project: Project) -> Skill:
    """Makes ``default_version`` the skill's default (its name and description become the skill's)."""
    return await _service(request).set_default(project, skill_id, body.default_version)


@router.delete("/{skill_id}")
async def delete_skill(skill_id: str, request: Request, project: Project) -> Deleted:
    await _service(request).delete(project, skill_id)
    return Deleted.of("skill", skill_id)


@router.get("/{skill_id}/content")
async def skill_content(skill_id: str, request: Request, project: Project) -> StreamingResponse:
    """The default version as a zip of one folder named after the skill."""
    return _zip_response(*await _service(request).content(project, skill_id, None))


@router.post("/{skill_id}/versions", openapi_extra=_UPLOAD_SCHEMA)
async def create_version(skill_id: str, request: Request, project: Project) -> SkillVersion:
    await _service(request).row(project, skill_id)  # an unknown skill is a 404 before its upload is read
    bundle, default = await _bundle(request)
    return await _service(request).create_version(project, skill_id, bundle, make_default=_is_default(default))


@router.get("/{skill_id}/versions")
async def list_versions(skill_id: str, request: Request, project: Project, after: str | None = None,
                        limit: Annotated[int, Query()] = 20,
                        order: Literal["asc", "desc"] = "desc") -> ListPage[SkillVersion]:
    return await _service(request).list_versions(project, skill_id, Page(after, limit, order))


@router.get("/{skill_id}/versions/{version}")
async def retrieve_version(skill_id: str, version: str, request: Request, project: Project) -> SkillVersion:
    return await _service(request).get_version(project, skill_id, version)


@router.delete("/{skill_id}/versions/{version}")
async def delete_version(skill_id: str, version: str, request: Request, project: Project) -> DeletedSkillVersion:
    return await _service(request).delete_version(project, skill_id, version)


@router.get("/{skill_id}/versions/{version}/content")
async def version_content(skill_id: str, version: str, request: Request, project: Project) -> StreamingResponse:
    return _zip_response(*await _service(request).content(project, skill_id, version))

