"""Building an offline index (``cove search index NAME PATH...``): walk the sources, extract each
document's text, write a ``tantivy`` index, swap it in whole.

Sources are directory trees (HTML, Markdown, text and PDF files; others are skipped) and ZIM
archives (``cove.search.zim``), given as paths. The new index is written beside the current one
and replaces it in one ``rename`` of the ``NAME`` symlink, so a failed or interrupted build leaves
the old index answering; the old build directory is removed afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import secrets
import shutil
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import tantivy

from cove.errors import InvalidRequest
from cove.search.extract import Unreadable, extract, kind_of
from cove.search.index import hosts_of, index_root, schema
from cove.search.spec import check_name
from cove.search.text import page_text, web_url
from cove.search.zim import Article, articles, entry_count

Progress = Callable[[int, str], None]
"""Called once per source entry looked at (done so far, its name)."""
WRITER_HEAP = 256 << 20
MAX_FILE_BYTES = 64 << 20
"""Larger files are skipped: a document that big is an archive or a dataset, not a page."""


@dataclass(frozen=True)
class Plan:
    """What a build will read: files and ZIM archives, and how many entries in all (for progress)."""

    files: list[Path]
    archives: list[Path]
    total: int


@dataclass(frozen=True)
class Built:
    name: str
    path: Path
    documents: int
    skipped: int


def default_workers() -> int:
    """Extraction processes by default: every CPU but one, which the index writer and the reading of
    the sources keep busy (so on 2 CPUs extraction stays in the command's process: measured faster)."""
    return max(1, (os.cpu_count() or 1) - 1)


def plan(paths: list[Path]) -> Plan:
    files: list[Path] = []
    archives: list[Path] = []
    for path in paths:
        if not path.exists():
            raise InvalidRequest(f"{path} does not exist.")
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for candidate in candidates:
            if candidate.suffix.lower() == ".zim":
                archives.append(candidate.resolve())
            elif kind_of(candidate.name) is not None:
                files.append(candidate.resolve())
    total = len(files)
    for archive in archives:
        try:
            total += entry_count(archive)
        except RuntimeError as exc:  # libzim's error for a file that is not a (complete) archive
            raise InvalidRequest(f"{archive} is not a readable ZIM archive.") from exc
    return Plan(files, archives, total)


def build(data_dir: Path, name: str, work: Plan, progress: Progress | None = None, workers: int = 1) -> Built:
    """Index everything in ``work`` as ``name``, replacing any index of that name when complete;
    ``workers`` processes extract the documents' text."""
    check_name(name)
    root = index_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    version = root / f"{name}.{secrets.token_hex(6)}"
    version.mkdir()
    try:
        documents, skipped = _write(version, work, progress or (lambda _done, _what: None), workers)
        link = root / f".{version.name}.link"
        link.symlink_to(version.name)
        os.replace(link, root / name)
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    for old in root.glob(f"{name}.*"):
        if old != version and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return Built(name, version, documents, skipped)


def _write(directory: Path, work: Plan, progress: Progress, workers: int) -> tuple[int, int]:
    index = tantivy.Index(schema(), path=str(directory))
    writer = index.writer(WRITER_HEAP, max(1, min(4, os.cpu_count() or 1)))
    seen: set[str] = set()
    documents = skipped = done = 0
    for url, title, text in _documents(work, workers):
        done += 1
        progress(done, url or "")
        if url is None or url in seen:
            skipped += 1
            continue
        seen.add(url)
        doc = tantivy.Document()
        doc.add_text("url", url)
        doc.add_text("title", title)
        doc.add_text("body", page_text(text))
        for host in hosts_of(url):
            doc.add_text("hosts", host)
        writer.add_document(doc)
        documents += 1
    writer.commit()
    writer.wait_merging_threads()
    return documents, skipped


Job = Path | Article | None
"""A file to read, a ZIM article to extract, or an entry that is skipped."""
Document = tuple[str | None, str, str]
"""(url, title, text); url None for an entry that is skipped."""
BATCH = 32
"""Jobs sent to a worker at once: enough to amortize the pickling, few enough to keep memory flat."""


def _documents(work: Plan, workers: int) -> Iterator[Document]:
    """Every entry of the plan, extracted in order; in ``workers`` processes when more than one
    (HTML extraction is CPU-bound: about 15 ms for a 30 KB page), with a bounded number of batches
    in flight so a Wikipedia-sized archive never sits in memory."""
    batches = _batches(itertools.chain(work.files, *(articles(archive) for archive in work.archives)))
    if workers <= 1:
        for batch in batches:
            yield from _extract_batch(batch)
        return
    # spawn, not fork: the parent runs tantivy's writer threads, which a fork would copy mid-flight.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: deque[Future[list[Document]]] = deque()
        for batch in batches:
            pending.append(pool.submit(_extract_batch, batch))
            if len(pending) >= workers * 4:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


def _batches(jobs: Iterator[Job]) -> Iterator[list[Job]]:
    while batch := list(itertools.islice(jobs, BATCH)):
        yield batch


def _extract_batch(batch: list[Job]) -> list[Document]:
    return [_file(job) if isinstance(job, Path) else _article(job) for job in batch]


def _article(article: Article | None) -> Document:
    if article is None:
        return None, "", ""
    try:
        doc = extract(article.html, "html")
    except Unreadable:
        return None, "", ""
    return article.url, article.title, doc.text  # the archive's own title, not a guess from the markup


def _file(path: Path) -> Document:
    kind = kind_of(path.name)
    with contextlib.suppress(OSError, Unreadable):
        if kind is not None and path.stat().st_size <= MAX_FILE_BYTES:
            doc = extract(path.read_bytes(), kind)
            url = web_url(doc.canonical) or path.as_uri()
            return url, doc.title or path.stem, doc.text
    return None, "", ""
