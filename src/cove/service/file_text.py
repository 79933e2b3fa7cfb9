"""A file as text, for upstreams that cannot read files (Chat Completions servers, the embedded model).

UTF-8 text is taken as it is; a PDF's text is extracted with ``pypdf``. Both are bounded (pages,
characters), since the file is hostile input and the result goes into a model's context: what is
cut is said in the text. Extraction is CPU work, so callers run it in a worker thread.
"""

from __future__ import annotations

import io
import logging

from pypdf import PdfReader

from cove.errors import InvalidRequest

MAX_PAGES = 500
"""Pages of a PDF read; the rest are named as left out."""
MAX_CHARS = 1_000_000
"""Characters of text kept per file (about 250k tokens, more than any context window holds whole)."""

IMAGE_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF87a": "image/gif",
               b"GIF89a": "image/gif"}
"""Magic numbers of the image types vision models take (WebP is checked apart: ``RIFF....WEBP``)."""


def image_type(data: bytes) -> str | None:
    """The image's MIME type when ``data`` is a PNG, JPEG, GIF or WebP, else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in IMAGE_TYPES.items() if data.startswith(magic)), None)


def is_pdf(data: bytes) -> bool:
    return data[:1024].lstrip().startswith(b"%PDF-")


def file_text(name: str, data: bytes, param: str) -> str:
    """The text of a UTF-8 text file or a PDF; anything else is a 400 naming ``param``."""
    if is_pdf(data):
        return _pdf_text(name, data, param)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise InvalidRequest(f"File '{name}' is neither UTF-8 text nor a PDF, so it cannot be shown to this "
                             "model's upstream as text.", param=param, code="unsupported_file")
    return _capped(text)


def _capped(text: str) -> str:
    if len(text) > MAX_CHARS:
        return f"{text[:MAX_CHARS]}\n[... {len(text) - MAX_CHARS} more characters not shown]"
    return text


def _pdf_text(name: str, data: bytes, param: str) -> str:
    unreadable = InvalidRequest(f"File '{name}' could not be read as a PDF.", param=param, code="invalid_pdf")
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings about a malformed file are not ours
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise InvalidRequest(f"File '{name}' is an encrypted PDF; send it decrypted.", param=param,
                                 code="encrypted_pdf")
        count = len(reader.pages)
        texts: list[str] = []
        size = 0
        for page in reader.pages[:MAX_PAGES]:
            texts.append(page.extract_text() or "")
            size += len(texts[-1])
            if size > MAX_CHARS:
                break
    except InvalidRequest:
        raise
    except Exception:  # pypdf raises many types for a malformed file (PdfReadError, KeyError, ValueError ...)
        raise unreadable from None
    text = _capped("\n\n".join(texts))
    if len(texts) < count:
        text += f"\n[... pages {len(texts) + 1}-{count} of {count} not shown]"
    return text
