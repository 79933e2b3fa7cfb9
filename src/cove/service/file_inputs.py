"""File inputs made ready for the model's upstream, at request time: ``input_file`` and
``input_image`` parts naming a file of ``/v1/files`` (``file_id``) get its bytes, and upstreams that
cannot read files get their text instead.

- Upstreams that read files (a Responses API upstream): a ``file_id`` becomes ``file_data`` (a data
  URL) with the file's name, since the upstream knows nothing of Cove's ids; ``file_url`` and
  ``file_data`` pass through.
- The others (Chat Completions servers, the embedded model): a file by id or by ``file_data`` becomes
  an ``input_text`` part with its text (UTF-8 or a PDF's, ``file_text.py``), or an image part when it
  is an image. A ``file_url`` is refused: Cove does not fetch URLs from the server (the URL could
  name anything the server can reach), and such an upstream cannot.
- ``input_image`` by ``file_id`` becomes an ``image_url`` data URL for every upstream.

Every failure is a 400 or 404 naming the part (``input[0].content[1].file_id``) before anything
runs, never a failed response. The stored input keeps the parts as the client sent them; resolution
happens again for each response that sees them (a chain's later responses included).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import mimetypes
import urllib.parse
from typing import Any

from cove.errors import InvalidRequest
from cove.service.file_text import file_text, image_type, is_pdf
from cove.service.project_files import ProjectFileService

INPUT_BYTES = 50 << 20
"""Bytes of files one request may send to a model in all (OpenAI's cap on file inputs)."""
_CONTAINERS = {"message": "content", "function_call_output": "output"}
"""Item types whose parts may hold files, and the key of those parts."""
_SCAN_IN_THREAD = 2000
"""Inputs longer than this are scanned for files in a worker thread (50,000 items take ~30 ms)."""


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def decode_file_data(value: str, param: str) -> bytes:
    """``file_data``: a data URL (``data:application/pdf;base64,...``) or bare base64."""
    try:
        if value.startswith("data:"):
            header, _, payload = value.partition(",")
            return (base64.b64decode(payload, validate=True) if header.endswith(";base64")
                    else urllib.parse.unquote_to_bytes(payload))
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("file_data must be base64 or a data URL.", param=param, code="invalid_value") from None


def _image_part(data: bytes, mime: str, detail: Any) -> dict[str, Any]:
    return {"type": "input_image", "image_url": _data_url(mime, data), "detail": detail or "auto"}


class _Budget:
    def __init__(self) -> None:
        self.left = INPUT_BYTES

    def spend(self, size: int, param: str) -> None:
        if size > self.left:
            raise InvalidRequest(f"The files of one request may send at most {INPUT_BYTES} bytes to a model; this "
                                 f"one ({size} bytes) is past what is left ({self.left}).", param=param,
                                 code="file_too_large")
        self.left -= size


class FileInputs:
    def __init__(self, files: ProjectFileService) -> None:
        self.files = files

    async def resolve(self, project: str, items: list[dict[str, Any]], *, first_new: int, reads_files: bool,
                      history_param: str) -> list[dict[str, Any]]:
        """``items`` with their file parts resolved (copies; items without files are the same objects).
        Items before ``first_new`` came from history: their failures name ``history_param``."""
        holding = (await asyncio.to_thread(_holding_files, items) if len(items) > _SCAN_IN_THREAD
                   else _holding_files(items))
        if not holding:
            return items
        budget = _Budget()
        resolved = list(items)
        for index, key in holding:
            item = items[index]
            where = f"input[{index - first_new}]" if index >= first_new else history_param
            resolved[index] = {**item, key: [
                await self._part(project, part, f"{where}.{key}[{position}]" if index >= first_new else where,
                                 reads_files, budget) if _has_file(part) else part
                for position, part in enumerate(item[key])]}
        return resolved

    async def _part(self, project: str, part: dict[str, Any], param: str, reads_files: bool,
                    budget: _Budget) -> dict[str, Any]:
        if part["type"] == "input_image":
            name, data = await self._by_id(project, part["file_id"], _sub(param, "file_id"), budget)
            mime = image_type(data)
            if mime is None:
                raise InvalidRequest(f"File '{part['file_id']}' ({name}) is not a PNG, JPEG, GIF or WebP image.",
                                     param=_sub(param, "file_id"), code="invalid_image")
            return _image_part(data, mime, part.get("detail"))
        if reads_files:
            if not part.get("file_id"):
                return part
            name, data = await self._by_id(project, part["file_id"], _sub(param, "file_id"), budget)
            name = part.get("filename") or name
            return {"type": "input_file", "filename": name, "file_data": _data_url(_mime(name, data), data)}
        if part.get("file_id"):
            where = _sub(param, "file_id")
            name, data = await self._by_id(project, part["file_id"], where, budget)
        elif part.get("file_data"):
            where = _sub(param, "file_data")
            data = decode_file_data(part["file_data"], where)
            budget.spend(len(data), where)
            name = "file"
        elif part.get("file_url"):
            raise InvalidRequest("This model's upstream cannot read files by URL, and Cove does not fetch URLs: "
                                 "upload the file to /v1/files and send its file_id, or send file_data.",
                                 param=_sub(param, "file_url"), code="unsupported_file_url")
        else:
            raise InvalidRequest("An input_file needs file_id, file_data or file_url.", param=param,
                                 code="missing_required_parameter")
        name = part.get("filename") or name
        mime = image_type(data)
        if mime is not None:
            return _image_part(data, mime, part.get("detail"))
        text = await asyncio.to_thread(file_text, name, data, where)
        return {"type": "input_text", "text": f"[file: {name}]\n{text}\n[end of file: {name}]"}

    async def _by_id(self, project: str, file_id: Any, param: str, budget: _Budget) -> tuple[str, bytes]:
        row = await self.files.row(project, str(file_id), param)
        budget.spend(row.bytes, param)
        return row.filename, await self.files.bytes_of(row)


def _holding_files(items: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """The positions of the items with file parts, and the key of their parts."""
    found = []
    for index, item in enumerate(items):
        key = _CONTAINERS.get(item.get("type", ""))
        parts = item.get(key) if key else None
        if key and isinstance(parts, list) and any(_has_file(part) for part in parts):
            found.append((index, key))
    return found


def _has_file(part: Any) -> bool:
    if not isinstance(part, dict):
        return False
    return part.get("type") == "input_file" or (part.get("type") == "input_image" and bool(part.get("file_id"))
                                                 and not part.get("image_url"))


def _sub(param: str, key: str) -> str:
    """``input[0].content[1].file_id`` for a new item's part; a history item's failures name the history."""
    return f"{param}.{key}" if param.startswith("input[") else param


def _mime(name: str, data: bytes) -> str:
    if is_pdf(data):
        return "application/pdf"
    return image_type(data) or mimetypes.guess_type(name)[0] or "application/octet-stream"
