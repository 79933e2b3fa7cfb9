"""``index:NAME``: an offline full-text index (``tantivy``, BM25) that answers with no network at all.

``cove search index NAME PATH...`` (``cove.search.build``) writes it under
``COVE_DATA_DIR/search``: each build is a directory ``NAME.<id>`` and ``NAME`` is a symlink to the
current one, swapped in one ``rename`` when a build is complete, so a server never sees half an
index and picks up a rebuild on its next query (it reads the link each time).

Every document keeps its extracted text, so hits get snippets around the matched words and
``open`` answers from the same text, without the sources (a ZIM archive, a docs tree) being read
again. A document's URL is the one its page names (``<link rel=canonical>``), else ``file://`` and
its absolute path for a file, or ``zim://ARCHIVE/ENTRY_PATH`` for a ZIM entry (``docs/search.md``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import tantivy

from cove.egress.policy import normalize_host
from cove.search.base import Hit, Page, Query, SearchEngine, SearchFailed, SearchNotConfigured
from cove.search.spec import check_name
from cove.search.text import MAX_QUERY_CHARS, MAX_TITLE, RESULTS, SNIPPET_CHARS, in_domains, normalize_domains, plain


def index_root(data_dir: Path) -> Path:
    return data_dir / "search"


def schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("url", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("title", stored=True, tokenizer_name="en_stem")
    builder.add_text_field("body", stored=True, tokenizer_name="en_stem")
    # The URL's host and every parent domain, so ``allowed_domains`` is a term filter in the query.
    builder.add_text_field("hosts", tokenizer_name="raw", index_option="basic")
    return builder.build()


def hosts_of(url: str) -> list[str]:
    """``docs.python.org`` -> ``docs.python.org``, ``python.org``, ``org`` (none for ``file://``)."""
    try:
        host = normalize_host(urlsplit(url).hostname or "")
    except ValueError:
        return []
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


class IndexEngine(SearchEngine):
    """Answers from one named index; safe for many tasks (searches run in worker threads)."""

    def __init__(self, name: str, data_dir: Path) -> None:
        self.index_name = check_name(name)
        self.name = f"index:{name}"
        self.link = index_root(data_dir) / name
        self.schema = schema()
        self._lock = threading.Lock()
        self._opened: tuple[str, tantivy.Index] | None = None
        self._current()  # a missing index is a configuration error now, not at the first query

    def _current(self) -> tantivy.Index:
        """The index the link points at now (reopened after a rebuild)."""
        try:
            return self._open(self._target())
        except (OSError, ValueError):
            pass  # a rebuild swapped the link and removed that build between reading and opening it
        target = self._target()
        try:
            return self._open(target)
        except (OSError, ValueError) as exc:
            raise SearchFailed(f"The offline index {self.index_name!r} cannot be opened.") from exc

    def _target(self) -> str:
        try:
            return os.readlink(self.link)
        except OSError:
            raise SearchNotConfigured(f"There is no offline index named {self.index_name!r}: build it with "
                                      f"`cove search index {self.index_name} PATH...`.") from None

    def _open(self, target: str) -> tantivy.Index:
        with self._lock:
            if self._opened is None or self._opened[0] != target:
                self._opened = (target, tantivy.Index.open(str(self.link.parent / target)))
            return self._opened[1]

    async def search(self, query: Query) -> list[Hit]:
        return await asyncio.to_thread(self._search_blocking, query)

    def _search_blocking(self, query: Query) -> list[Hit]:
        """``search``, blocking the calling thread (a worker thread: tantivy and the snippets are CPU work)."""
        index = self._current()
        searcher = index.searcher()
        parsed, _errors = index.parse_query_lenient(query.text[:MAX_QUERY_CHARS], ["title", "body"],
                                                    field_boosts={"title": 2.0})
        if query.domains:
            hosts = [(tantivy.Occur.Should, tantivy.Query.term_query(self.schema, "hosts", domain))
                     for domain in normalize_domains(query.domains)]
            parsed = tantivy.Query.boolean_query([(tantivy.Occur.Must, parsed),
                                                  (tantivy.Occur.Must, tantivy.Query.boolean_query(hosts))])
        found = searcher.search(parsed, limit=RESULTS[query.size], count=False)
        chars = SNIPPET_CHARS[query.size]
        snippets = tantivy.SnippetGenerator.create(searcher, parsed, self.schema, "body")
        snippets.set_max_num_chars(chars)
        hits: list[Hit] = []
        for _score, address in found.hits:
            doc = searcher.doc(address)
            url = _first(doc["url"])
            if not in_domains(url, query.domains):
                continue
            fragment = snippets.snippet_from_doc(doc).fragment()
            hits.append(Hit(url, plain(_first(doc["title"]), MAX_TITLE) or url,
                            plain(fragment or _first(doc["body"]), chars)))
        return hits

    async def open(self, url: str, domains: tuple[str, ...] = ()) -> Page:
        if not in_domains(url, domains):
            raise SearchFailed(f"{plain(url, 200)} is outside the allowed domains ({', '.join(domains)}).")
        return await asyncio.to_thread(self._open_blocking, url)

    def _open_blocking(self, url: str) -> Page:
        searcher = self._current().searcher()
        found = searcher.search(tantivy.Query.term_query(self.schema, "url", url), limit=1, count=False)
        if not found.hits:
            raise SearchFailed(f"{plain(url, 200)} is not in the offline index {self.index_name!r}.")
        doc = searcher.doc(found.hits[0][1])
        return Page(url, plain(_first(doc["title"]), MAX_TITLE), _first(doc["body"]))


def _first(values: Iterable[object]) -> str:
    return next((value for value in values if isinstance(value, str)), "")
