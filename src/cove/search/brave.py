"""``brave``: the Brave Search API (``GET /res/v1/web/search``, key in ``X-Subscription-Token``).

Results are ``web.results`` with ``title``, ``url`` and ``description`` (matches wrapped in
``<strong>``, stripped here). ``count`` is at most 20; ``country`` takes the user location's
two-letter code. Allowed domains go into the query as ``site:`` operators and are filtered here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cove.search.base import Query
from cove.search.reader import PageReader
from cove.search.text import MAX_QUERY_CHARS, with_sites
from cove.search.web import WebEngine, results_list


class BraveEngine(WebEngine):
    label = "Brave Search"

    def __init__(self, base_url: str, key: str, reader: PageReader, timeout: float) -> None:
        super().__init__("brave", reader, timeout)
        self.endpoint = base_url.rstrip("/") + "/web/search"
        self._key = key

    async def _results(self, query: Query, count: int) -> Iterable[Mapping[str, Any]]:
        params = {"q": with_sites(query.text, query.domains)[:MAX_QUERY_CHARS], "count": str(min(count, 20))}
        country = query.location.get("country", "")
        if len(country) == 2 and country.isalpha():
            params["country"] = country.upper()
        headers = {"Accept": "application/json", "X-Subscription-Token": self._key}
        data = await self._json(self.client.build_request("GET", self.endpoint, params=params, headers=headers))
        web = data.get("web")
        return results_list(web.get("results")) if isinstance(web, Mapping) else []

    def _snippet(self, result: Mapping[str, Any]) -> object:
        extra = result.get("extra_snippets")
        more = " … ".join(s for s in extra if isinstance(s, str)) if isinstance(extra, list) else ""
        description = result.get("description")
        return f"{description} … {more}" if isinstance(description, str) and more else description or more
