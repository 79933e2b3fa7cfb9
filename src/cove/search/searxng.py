"""``searxng:BASE_URL``: a SearXNG instance's JSON API (``GET /search?q=...&format=json``).

SearXNG is the metasearch engine self-hosters run; its JSON output must be enabled in its
``settings.yml`` (``search.formats``), else it answers 403, which the error says. Allowed domains
go into the query as ``site:`` operators (most of its upstream engines honour them) and the
results are filtered here as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cove.search.base import Query, SearchFailed
from cove.search.reader import PageReader
from cove.search.text import MAX_QUERY_CHARS, plain, with_sites
from cove.search.web import WebEngine, results_list


class SearxngEngine(WebEngine):
    label = "SearXNG"

    def __init__(self, base_url: str, reader: PageReader, timeout: float) -> None:
        super().__init__(f"searxng:{base_url}", reader, timeout)
        self.endpoint = base_url.rstrip("/") + "/search"

    async def _results(self, query: Query, count: int) -> Iterable[Mapping[str, Any]]:
        params = {"q": with_sites(query.text[:MAX_QUERY_CHARS], query.domains), "format": "json", "pageno": "1"}
        data = await self._json(self.client.build_request("GET", self.endpoint, params=params,
                                                          headers={"Accept": "application/json"}))
        results = results_list(data.get("results"))
        failing = data.get("unresponsive_engines")
        if not results and isinstance(failing, list) and failing:
            # Nothing found because its upstream engines failed (blocked, rate limited): an outage,
            # not an empty answer the model should take as "no such pages".
            names = ", ".join(plain(" ".join(map(str, entry)) if isinstance(entry, list) else entry, 80)
                              for entry in failing[:5])
            raise SearchFailed(f"SearXNG found nothing because its engines failed ({names}).")
        return results

    def _snippet(self, result: Mapping[str, Any]) -> object:
        return result.get("content")

    def _refusal(self, status: int) -> str:
        if status == 403:
            return "SearXNG refused the request (HTTP 403): its JSON format is probably not enabled (search.formats)."
        return super()._refusal(status)
