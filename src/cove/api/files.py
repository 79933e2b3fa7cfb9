"""``/v1/files``: OpenAI's Files API (upload, list, retrieve, content, delete), per project."""

from __future__ import annotations

import mimetypes
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from cove.api import multipart
from cove.api.auth import project_of
from cove.errors import InvalidRequest
from cove.service.objects import Deleted, FileObject, ListPage
from cove.service.pagination import Page
from cove.service.project_files import ProjectFileService, check_upload

router = APIRouter(prefix="/v1/files", tags=["files"])
Project = Annotated[str, Depends(project_of)]
MAX_LIST = 10_000
"""OpenAI lists up to 10,000 files a page (its default too)."""


def _service(request: Request) -> ProjectFileService:
    service: ProjectFileService = request.app.state.project_files
    return service


_UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "The file's bytes."},
        "purpose": {"type": "string", "enum": ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]},
        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
        "expires_after[seconds]": {"type": "integer", "minimum": 3600, "maximum": 2592000}}}}}}}
"""The form the route parses itself, described for /openapi.json (and the fuzzer that reads it)."""


@router.post("", openapi_extra=_UPLOAD_SCHEMA)
async def create_file(request: Request, project: Project) -> FileObject:
    """Multipart ``file``, ``purpose`` and optional ``expires_after`` (as the SDK flattens it:
    ``expires_after[anchor]``, ``expires_after[seconds]``); parsed here, not by FastAPI, to choose the spool."""
    form = await multipart.form(request)
    try:
        file = multipart.file_part(form)
        if file is None:
            raise InvalidRequest("Missing required parameter: 'file' (multipart upload).", param="file",
                                 code="missing_required_parameter")
        filename = file.filename or "upload"
        purpose = multipart.field(form, "purpose")
        seconds = check_upload(filename, purpose, multipart.field(form, "expires_after[anchor]"),
                               multipart.field(form, "expires_after[seconds]"))
        assert purpose is not None
        return await _service(request).create(project, filename, purpose, seconds, file.file)
    finally:
        await form.close()


@router.get("")
async def list_files(request: Request, project: Project, after: str | None = None,
                     limit: Annotated[int, Query()] = MAX_LIST, order: Literal["asc", "desc"] = "desc",
                     purpose: str | None = None) -> ListPage[FileObject]:
    return await _service(request).list_page(project, Page(after, limit, order, most=MAX_LIST), purpose)


@router.get("/{file_id}")
async def retrieve_file(file_id: str, request: Request, project: Project) -> FileObject:
    return await _service(request).get(project, file_id)


@router.delete("/{file_id}")
async def delete_file(file_id: str, request: Request, project: Project) -> Deleted:
    await _service(request).delete(project, file_id)
    return Deleted(id=file_id, object="file")  # OpenAI's FileDeleted says "file", not "file.deleted"


@router.get("/{file_id}/content")
async def file_content(file_id: str, request: Request, project: Project) -> StreamingResponse:
    """The bytes as uploaded, typed by the file's name (``application/octet-stream`` when unknown)."""
    file, chunks = await _service(request).content(project, file_id)
    media_type = mimetypes.guess_type(file.filename)[0] or "application/octet-stream"
    return StreamingResponse(chunks, media_type=media_type, headers={"Content-Length": str(file.bytes)})
