"""``/v1/containers/{id}/files``: upload, list, read, download and delete container files."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from cove.api import multipart
from cove.api.auth import project_of
from cove.errors import InvalidRequest
from cove.service.files import FileService
from cove.service.objects import ContainerFile, Deleted, ListPage
from cove.service.pagination import Page
from cove.service.project_files import ProjectFileService

router = APIRouter(prefix="/v1/containers/{container_id}/files", tags=["container files"])
Project = Annotated[str, Depends(project_of)]


def _service(request: Request) -> FileService:
    service: FileService = request.app.state.files
    return service


async def _json_file_id(request: Request) -> str:
    """``{"file_id": ...}``, the body the SDK sends for ``containers.files.create(file_id=...)``."""
    try:
        body: Any = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("file_id"), str) or set(body) != {"file_id"}:
        raise InvalidRequest("Send a multipart 'file' or a JSON body {\"file_id\": ...}.", param="file")
    return str(body["file_id"])


async def _copy(request: Request, project: str, container_id: str, file_id: str) -> ContainerFile:
    project_files: ProjectFileService = request.app.state.project_files
    await _service(request).containers.get(project, container_id)  # an unknown container answers first
    return await project_files.copy_to_container(project, container_id, file_id)


_UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "The file's bytes."},
        "path": {"type": "string", "description": "Where to put it (default /mnt/data/<filename>)."},
        "file_id": {"type": "string", "description": "Copy this file of /v1/files instead of sending one."}}}},
    "application/json": {"schema": {"type": "object", "required": ["file_id"], "properties": {
        "file_id": {"type": "string", "description": "The file of /v1/files to copy to /mnt/data."}}}}}}}
"""The form the route parses itself, described for /openapi.json (and the fuzzer that reads it)."""


@router.post("", openapi_extra=_UPLOAD_SCHEMA)
async def upload_file(container_id: str, request: Request, project: Project) -> ContainerFile:
    """Multipart ``file`` (and optional ``path``), parsed here to choose the spool; or a ``file_id`` of
    ``/v1/files`` (JSON, as the SDK sends it, or a form field), copied to ``/mnt/data/<its name>``."""
    if not multipart.is_multipart(request):
        return await _copy(request, project, container_id, await _json_file_id(request))
    form = await multipart.form(request)
    try:
        file, path, file_id = multipart.file_part(form), multipart.field(form, "path"), multipart.field(form, "file_id")
        if file is None:
            if file_id is not None:
                return await _copy(request, project, container_id, file_id)
            raise InvalidRequest("Missing required parameter: 'file' (multipart upload).", param="file")
        return await _service(request).upload(project, container_id, file.filename or "upload", path,
                                              multipart.chunks(file))
    finally:
        await form.close()


@router.get("")
async def list_files(container_id: str, request: Request, project: Project, after: str | None = None,
                     limit: int = 20, order: Literal["asc", "desc"] = "desc") -> ListPage[ContainerFile]:
    return await _service(request).list_page(project, container_id, Page(after, limit, order))


@router.get("/{file_id}")
async def get_file(container_id: str, file_id: str, request: Request, project: Project) -> ContainerFile:
    return await _service(request).get(project, container_id, file_id)


@router.delete("/{file_id}")
async def delete_file(container_id: str, file_id: str, request: Request, project: Project) -> Deleted:
    await _service(request).delete(project, container_id, file_id)
    return Deleted.of("container.file", file_id)


@router.get("/{file_id}/content")
async def file_content(container_id: str, file_id: str, request: Request, project: Project) -> StreamingResponse:
    size, chunks = await _service(request).content(project, container_id, file_id)
    return StreamingResponse(chunks, media_type="application/octet-stream",
                             headers={"Content-Length": str(size)})
