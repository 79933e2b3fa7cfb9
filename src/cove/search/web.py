"""What the online engines (SearXNG, Brave, Tavily) share: one JSON request to the engine, with its
failures as ``SearchFailed``, results bounded and filtered, and page reads through ``PageReader``.

The engine's own URL is the operator's and trusted (it may use the operator's proxy settings,
``HTTPS_PROXY``); its answer is not: it is bounded in size, parsed defensively, and every hit is a
clean http(s) URL with plain-text title and snippet, only from ``query.domains`` when given.
Messages never carry the key or the engine's URL: the model reads them.
"""

from __future__ import annotations

import abc
import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from cove.search.base import Hit, Page, Query, SearchEngine, SearchFailed
from cove.search.reader import PageReader
from cove.search.text import MAX_TITLE, RESULTS, SNIPPET_CHARS, in_domains, plain, web_url

MAX_ANSWER_BYTES = 4 << 20
"""Largest engine answer read; a few dozen results are tens of kilobytes."""


class WebEngine(SearchEngine):
    label: str
    """How messages name the engine (``SearXNG``, ``Brave Search``)."""

    def __init__(self, name: str, reader: PageReader, timeout: float) -> None:
        self.name = name
        self.reader = reader
        self.timeout = timeout
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False)

    @abc.abstractmethod
    async def _results(self, query: Query, count: int) -> Iterable[Mapping[str, Any]]:
        """The engine's raw results (dicts with ``url``, ``title`` and a snippet), best first."""

    @abc.abstractmethod
    def _snippet(self, result: Mapping[str, Any]) -> object:
        """The text of one raw result the engine gives about the page."""

    async def search(self, query: Query) -> list[Hit]:
        count = RESULTS[query.size]
        hits: dict[str, Hit] = {}
        for result in await self._results(query, count):
            url = web_url(result.get("url")) if isinstance(result, Mapping) else None
            if url is None or url in hits or not in_domains(url, query.domains):
                continue
            hits[url] = Hit(url, plain(result.get("title"), MAX_TITLE) or url,
                            plain(self._snippet(result), SNIPPET_CHARS[query.size]))
            if len(hits) == count:
                break
        return list(hits.values())

    async def open(self, url: str, domains: tuple[str, ...] = ()) -> Page:
        return await self.reader.read(url, domains)

    async def _json(self, request: httpx.Request) -> dict[str, Any]:
        """The engine's JSON object answer to ``request``; anything else is a ``SearchFailed``."""
        try:
            async with asyncio.timeout(self.timeout):  # in all: a server dripping bytes gets no longer
                return self._parse(await self._read(request))
        except (TimeoutError, httpx.TimeoutException):
            raise SearchFailed(f"{self.label} did not answer within {self.timeout:g} s.") from None
        except httpx.HTTPError as exc:
            raise SearchFailed(f"{self.label} could not be reached ({type(exc).__name__}).") from None

    async def _read(self, request: httpx.Request) -> bytes:
        response = await self.client.send(request, stream=True)
        try:
            if response.status_code != 200:
                raise SearchFailed(self._refusal(response.status_code))
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise SearchFailed(f"{self.label} answered with more than {MAX_ANSWER_BYTES} bytes.")
            return bytes(body)
        finally:
            await response.aclose()

    def _parse(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise SearchFailed(f"{self.label} answered with something that is not a JSON object.")
        return data

    def _refusal(self, status: int) -> str:
        if status == 429:
            return f"{self.label} is over its rate limit or quota (HTTP 429); try again later."
        if status in (401, 403):
            return f"{self.label} refused the request (HTTP {status}): its key or its settings do not allow it."
        if status >= 500:
            return f"{self.label} is failing (HTTP {status})."
        return f"{self.label} answered HTTP {status}."

    async def aclose(self) -> None:
        await self.client.aclose()  # the page reader is shared (``Engines``) and closed there


def results_list(value: object) -> list[Mapping[str, Any]]:
    """The mappings in ``value`` if it is a list (an engine's ``results``), else none."""
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []
