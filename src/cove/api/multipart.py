"""Multipart uploads as the app parses them: one file part, spooled past 1 MiB in the data dir's
spool (on the server's own disk, private to it) rather than the host's shared /tmp. Bodies are
capped before they reach this parser (``body_limit.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from tempfile import SpooledTemporaryFile

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from cove.errors import InvalidRequest

_CHUNK = 1 << 20


def chunks(upload: UploadFile) -> Iterator[bytes]:
    upload.file.seek(0)
    while chunk := upload.file.read(_CHUNK):
        yield chunk


class _SpoolingParser(MultiPartParser):
    """Starlette's multipart parser, spooling files past 1 MiB in ``spool_dir`` instead of /tmp."""

    def __init__(self, request: Request, spool_dir: Path, max_files: int) -> None:
        super().__init__(request.headers, request.stream(), max_files=max_files, max_fields=8)
        self._spool_dir = spool_dir

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        upload = self._current_part.file
        if upload is not None:  # a file part: swap the spool made in the default dir (still empty)
            spool: SpooledTemporaryFile[bytes] = SpooledTemporaryFile(  # noqa: SIM115 - closed with the form
                max_size=self.spool_max_size, dir=str(self._spool_dir))
            self._files_to_close_on_error[-1] = spool
            upload.file = spool  # type: ignore[assignment]


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


async def form(request: Request, *, max_files: int = 1, param: str = "file") -> FormData:
    """The parsed form (close it when done) with at most ``max_files`` file parts; a body that is not
    multipart names ``param``."""
    if not is_multipart(request):
        raise InvalidRequest(f"Missing required parameter: '{param}' (multipart upload).", param=param)
    try:
        return await _SpoolingParser(request, request.app.state.settings.spool_dir, max_files).parse()
    except MultiPartException as exc:
        raise InvalidRequest(f"Invalid multipart body: {exc.message}", param=param) from None


def field(data: FormData, name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a form field, not a file.", param=name)
    return value


def file_parts(data: FormData, *names: str) -> list[UploadFile]:
    """Every file part under any of ``names`` (an SDK sends a list as ``files[]``, one file as ``files``)."""
    return [value for name in names for value in data.getlist(name) if isinstance(value, UploadFile)]


def file_part(data: FormData) -> UploadFile | None:
    value = data.get("file")
    return value if isinstance(value, UploadFile) else None
