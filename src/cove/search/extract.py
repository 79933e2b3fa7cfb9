"""A document's title and main text, from HTML (``trafilatura``), PDF (``pypdf``), Markdown or text.

Used for page reads and by the offline index, so a page reads the same whichever way it came in.
All of it is CPU work on hostile bytes: callers run it in a worker thread, and a document that
cannot be read is ``Unreadable`` with a reason, never an exception from the parsers.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass

import trafilatura
from pypdf import PdfReader
from trafilatura.metadata import extract_metadata

MAX_PDF_PAGES = 500

_MARKDOWN_TITLE = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.M)
_FRONT_TITLE = re.compile(r"\A---\s*\n(?:.*\n)*?title:\s*[\"']?(.+?)[\"']?\s*\n(?:.*\n)*?---\s*\n")


class Unreadable(Exception):
    """The bytes are not a document of the kind they claim to be (or of any kind read here)."""


@dataclass(frozen=True)
class Extracted:
    title: str
    text: str
    canonical: str | None = None
    """The page's own URL (``<link rel=canonical>``, ``og:url``), when it names one."""


def kind_of(name: str, content_type: str = "") -> str | None:
    """``html``, ``pdf``, ``markdown`` or ``text`` from a media type or a file name; None: not read."""
    media = content_type.split(";", 1)[0].strip().lower()
    lower = name.lower()
    if media in ("text/html", "application/xhtml+xml") or lower.endswith((".html", ".htm", ".xhtml")):
        return "html"
    if media == "application/pdf" or lower.endswith(".pdf"):
        return "pdf"
    if media == "text/markdown" or lower.endswith((".md", ".markdown")):
        return "markdown"
    if media.startswith("text/") or media in ("application/json", "application/xml") or lower.endswith(
            (".txt", ".text", ".rst")):
        return "text"
    return None


def extract(data: bytes, kind: str, url: str | None = None) -> Extracted:
    """Title and main text of ``data`` read as ``kind`` (see ``kind_of``)."""
    if kind == "html":
        return _html(data, url)
    if kind == "pdf":
        return _pdf(data)
    text = _decode(data)
    title = ""
    if kind == "markdown":
        found = _FRONT_TITLE.match(text) or _MARKDOWN_TITLE.search(text)
        title = found.group(1).strip() if found else ""
    else:
        title = next((line.strip() for line in text.splitlines() if line.strip()), "")[:200]
    return Extracted(title, text.strip())


def _decode(data: bytes) -> str:
    text = data.decode("utf-8-sig", errors="replace")
    if "\x00" in text:
        raise Unreadable("binary data, not text")
    return text


def _html(data: bytes, url: str | None) -> Extracted:
    try:
        metadata = extract_metadata(data)
        text = trafilatura.extract(data, url=url, fast=True, include_comments=False, include_tables=True)
        if not text:  # too short or too odd for its heuristics: all the visible text, then
            text = trafilatura.html2txt(data)
    except Exception as exc:  # lxml and trafilatura raise many kinds for broken markup
        raise Unreadable("not readable as HTML") from exc
    canonical = metadata.url if metadata is not None else None
    title = (metadata.title if metadata is not None else None) or ""
    return Extracted(title.strip(), (text or "").strip(), canonical)


def _pdf(data: bytes) -> Extracted:
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings about a malformed file are not ours
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise Unreadable("an encrypted PDF")
        texts = [page.extract_text() or "" for page in reader.pages[:MAX_PDF_PAGES]]
        info = reader.metadata
        title = str(info.get("/Title") or "") if info is not None else ""
    except Unreadable:
        raise
    except Exception as exc:  # pypdf raises many types for a malformed file
        raise Unreadable("not readable as a PDF") from exc
    text = "\n\n".join(texts).strip()
    return Extracted(title.strip() or next((line.strip() for line in text.splitlines() if line.strip()), "")[:200],
                     text)
