"""Articles of a ZIM archive (Kiwix: offline Wikipedia, Stack Exchange, docs), read with ``libzim``.

An article is an HTML entry that is not a redirect; images, scripts and styles are skipped. Its URL
is ``zim://ARCHIVE/ENTRY_PATH`` (ARCHIVE: the file name without ``.zim``, lowercased to a host
name), the entry's path as the archive names it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from libzim.reader import Archive  # type: ignore[import-untyped]

from cove.egress.policy import normalize_host


@dataclass(frozen=True)
class Article:
    url: str
    title: str
    html: bytes


def archive_host(path: Path) -> str:
    """The host part of the archive's URLs: its file name, made a valid host name."""
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in path.stem.lower()).strip("-_") or "zim"
    try:
        return normalize_host(stem[:63])
    except ValueError:
        return "zim"


def entry_count(path: Path) -> int:
    """Entries to look at (an upper bound on the articles), for the progress bar."""
    return int(Archive(str(path)).entry_count)


def articles(path: Path) -> Iterator[Article | None]:
    """Each entry of the archive in order: an ``Article``, or None for one that is not (so a caller
    can count progress by entries)."""
    archive = Archive(str(path))
    host = archive_host(path)
    for number in range(archive.entry_count):
        try:
            yield _article(archive, number, host)
        except RuntimeError:  # libzim's error for a damaged entry or cluster: skip it, keep the rest
            yield None


def _article(archive: Archive, number: int, host: str) -> Article | None:
    entry = archive._get_entry_by_id(number)  # libzim's Python binding iterates entries by id
    if entry.is_redirect:
        return None
    item = entry.get_item()
    if not str(item.mimetype).startswith("text/html"):
        return None
    return Article(f"zim://{host}/{quote(entry.path, safe='/')}", str(entry.title or entry.path),
                   bytes(item.content))
