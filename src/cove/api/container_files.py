"""``/v1/containers/{id}/files``: upload, list, read, download and delete container files."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request, UploadFile
from fastapi.responses import StreamingResponse

from cove.api.auth import project_of
from cove.errors import InvalidRequest
from cove.service.files import FileService
from cove.service.objects import ContainerFile, Deleted, ListPage
from cove.service.pagination import Page

router = APIRouter(prefix="/v1/containers/{container_id}/files", tags=["container files"])
Project = Annotated[str, Depends(project_of)]
_CHUNK = 1 << 20


def _service(request: Request) -> FileService:
    service: FileService = request.app.state.files
    return service


def _chunks(upload: UploadFile) -> Iterator[bytes]:
    upload.file.seek(0)
    while chunk := upload.file.read(_CHUNK):
        yield chunk


@router.post("")
async def upload_file(container_id: str, request: Request, project: Project,
                      file: UploadFile | None = None, path: Annotated[str | None, Form()] = None,
                      file_id: Annotated[str | None, Form()] = None) -> ContainerFile:
    if file is None:
        if file_id is not None:
            raise InvalidRequest(f"No file found with id '{file_id}'.", param="file_id", code="file_not_found")
        raise InvalidRequest("Missing required parameter: 'file' (multipart upload).", param="file")
    return await _service(request).upload(project, container_id, file.filename or "upload", path, _chunks(file))


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
