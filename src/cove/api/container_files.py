"""``/v1/containers/{id}/files``: upload, list, read, download and delete container files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from tempfile import SpooledTemporaryFile
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

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


class _SpoolingParser(MultiPartParser):
    """Starlette's multipart parser, spooling files past 1 MiB in ``spool_dir`` (the data dir's disk,
    private to the server) instead of the host's shared /tmp."""

    def __init__(self, request: Request, spool_dir: Path) -> None:
        super().__init__(request.headers, request.stream(), max_files=1, max_fields=8)
        self._spool_dir = spool_dir

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        upload = self._current_part.file
        if upload is not None:  # a file part: swap the spool made in the default dir (still empty)
            spool: SpooledTemporaryFile[bytes] = SpooledTemporaryFile(  # noqa: SIM115 - closed with the form
                max_size=self.spool_max_size, dir=str(self._spool_dir))
            self._files_to_close_on_error[-1] = spool
            upload.file = spool  # type: ignore[assignment]


async def _form(request: Request) -> FormData:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("Missing required parameter: 'file' (multipart upload).", param="file")
    try:
        return await _SpoolingParser(request, request.app.state.settings.spool_dir).parse()
    except MultiPartException as exc:
        raise InvalidRequest(f"Invalid multipart body: {exc.message}", param="file") from None


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a form field, not a file.", param=name)
    return value


_UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "The file's bytes."},
        "path": {"type": "string", "description": "Where to put it (default /mnt/data/<filename>)."},
        "file_id": {"type": "string", "description": "Not supported: answers file_not_found."}}}}}}}
"""The form the route parses itself, described for /openapi.json (and the fuzzer that reads it)."""


@router.post("", openapi_extra=_UPLOAD_SCHEMA)
async def upload_file(container_id: str, request: Request, project: Project) -> ContainerFile:
    """Multipart ``file`` (and optional ``path``); parsed here, not by FastAPI, to choose the spool."""
    form = await _form(request)
    try:
        file, path, file_id = form.get("file"), _field(form, "path"), _field(form, "file_id")
        if not isinstance(file, UploadFile):
            if file_id is not None:
                raise InvalidRequest(f"No file found with id '{file_id}'.", param="file_id", code="file_not_found")
            raise InvalidRequest("Missing required parameter: 'file' (multipart upload).", param="file")
        return await _service(request).upload(project, container_id, file.filename or "upload", path, _chunks(file))
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
