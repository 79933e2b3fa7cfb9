"""``tavily``: the Tavily Search API (``POST /search``, key as ``Authorization: Bearer``).

The request asks for a ``basic`` search (one credit) of at most 20 results, with allowed domains
as ``include_domains``, which Tavily filters on itself; results (``title``, ``url``, ``content``)
are filtered here as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cove.search.base import Query
from cove.search.reader import PageReader
from cove.search.text import MAX_QUERY_CHARS, normalize_domains
from cove.search.web import WebEngine, results_list


class TavilyEngine(WebEngine):
    label = "Tavily"

    def __init__(self, base_url: str, key: str, reader: PageReader, timeout: float) -> None:
        super().__init__("tavily", reader, timeout)
        self.endpoint = base_url.rstrip("/") + "/search"
        self._key = key

    async def _results(self, query: Query, count: int) -> Iterable[Mapping[str, Any]]:
        body: dict[str, Any] = {"query": query.text[:MAX_QUERY_CHARS], "max_results": min(count, 20),
                                "search_depth": "basic", "topic": "general"}
        if query.domains:
            body["include_domains"] = list(normalize_domains(query.domains))
        headers = {"Accept": "application/json", "Authorization": f"Bearer {self._key}"}
        data = await self._json(self.client.build_request("POST", self.endpoint, json=body, headers=headers))
        return results_list(data.get("results"))

    def _snippet(self, result: Mapping[str, Any]) -> object:
        return result.get("content")
