"""Numbered web sources and the ``url_citation`` annotations an answer's markers become.

Every source the ``web_search`` tool shows the model (a result, an opened page) gets a number, the
same number each time its URL is shown again, counted over everything the model reads (earlier
responses of a chain included: their ``web_search_call`` items keep the numbers they showed). The
model is told to cite with ``[n]``; in its final answer each marker naming a source it was shown
becomes a ``url_citation`` over the marker's exact characters. Models copy a short number far more
reliably than a URL, and a number the model was never shown cites nothing, so an annotation always
points at a source the model really read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

CALL_TYPE = "web_search_call"

_BRACKET = r"\[\d{1,4}(?:\s*,\s*\d{1,4})*\]"
_MARKERS = re.compile(rf"(?<![\w\]])(?:{_BRACKET})+")
"""A run of markers, ``[3]``, ``[1, 4]`` or ``[1][2]``, not preceded by a word character or ``]`` (so
``x[1]`` and ``x[1][2]`` in code are no citations)."""
_MARKER = re.compile(_BRACKET)


@dataclass(frozen=True)
class Source:
    number: int
    url: str
    title: str


class Sources:
    """The numbers given out so far, by URL, for one model's context."""

    def __init__(self) -> None:
        self._by_url: dict[str, Source] = {}
        self._by_number: dict[int, Source] = {}

    @classmethod
    def of(cls, items: Iterable[dict[str, Any]]) -> Sources:
        """The book as earlier ``web_search_call`` items (in ``items``) left it."""
        book = cls()
        for item in items:
            if item.get("type") != CALL_TYPE:
                continue
            for result in item.get("results") or []:
                if isinstance(result, dict) and isinstance(result.get("index"), int) and result.get("url"):
                    book._keep(Source(result["index"], str(result["url"]), str(result.get("title") or "")))
        return book

    def _keep(self, source: Source) -> None:
        if source.url not in self._by_url and source.number not in self._by_number:
            self._by_url[source.url] = self._by_number[source.number] = source

    def number(self, url: str, title: str) -> Source:
        """The source for ``url``: its earlier number, else the next one."""
        known = self._by_url.get(url)
        if known is not None:
            if title and not known.title:
                known = self._by_url[url] = self._by_number[known.number] = Source(known.number, url, title)
            return known
        source = Source(max(self._by_number, default=0) + 1, url, title)
        self._keep(source)
        return source

    def __bool__(self) -> bool:
        return bool(self._by_number)

    def citations(self, text: str) -> list[dict[str, Any]]:
        """``url_citation`` annotations for the markers in ``text`` that name a known source, in order.
        Offsets are Python string indices (code points) of the marker: ``text[start:end]`` is ``[n]``."""
        annotations = []
        for run in _MARKERS.finditer(text):
            for match in _MARKER.finditer(text, run.start(), run.end()):
                for number in dict.fromkeys(int(part) for part in match.group()[1:-1].split(",")):
                    source = self._by_number.get(number)
                    if source is not None:
                        annotations.append({"type": "url_citation", "url": source.url, "title": source.title,
                                            "start_index": match.start(), "end_index": match.end()})
        return annotations
