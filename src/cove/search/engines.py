"""From ``COVE_WEB_SEARCH`` (or a project's ``web_search``) to an engine.

Specs: ``index:NAME`` (an offline index), ``searxng:BASE_URL`` (a SearXNG instance),
``brave`` and ``tavily`` (keys in ``COVE_BRAVE_API_KEY`` / ``COVE_TAVILY_API_KEY``) and
``upstream``: the Responses upstream's own web search, which is the tool's business, so no engine
here (``engine_for`` returns None). A spec that cannot work is ``SearchNotConfigured`` naming the
problem (``spec.py`` checks the syntax).

``Engines`` is what a server holds: one engine per spec, built on first use, all sharing one page
reader and one cache.
"""

from __future__ import annotations

from cove.config import Settings, parse_size
from cove.search.base import SearchEngine, SearchNotConfigured
from cove.search.brave import BraveEngine
from cove.search.cache import CachedEngine, TtlCache
from cove.search.index import IndexEngine
from cove.search.reader import PageReader
from cove.search.searxng import SearxngEngine
from cove.search.spec import parse_spec
from cove.search.tavily import TavilyEngine


def engine_for(spec: str, settings: Settings, reader: PageReader | None = None,
               cache: TtlCache | None = None) -> SearchEngine | None:
    """The engine ``spec`` names (None for ``upstream``), answers cached when ``cache`` is given."""
    kind, argument = parse_spec(spec)
    engine: SearchEngine
    if kind == "upstream":
        return None
    if kind == "index":
        engine = IndexEngine(argument, settings.data_dir)
    else:
        reader = reader or PageReader.from_settings(settings)
        timeout = settings.web_search_timeout
        if kind == "searxng":
            engine = SearxngEngine(argument, reader, timeout)
        elif kind == "brave":
            engine = BraveEngine(settings.brave_base_url, _key(settings.brave_api_key, "brave", "BRAVE"),
                                 reader, timeout)
        else:
            engine = TavilyEngine(settings.tavily_base_url, _key(settings.tavily_api_key, "tavily", "TAVILY"),
                                  reader, timeout)
    return CachedEngine(engine, cache) if cache is not None else engine


def _key(key: str | None, spec: str, env: str) -> str:
    if not key:
        raise SearchNotConfigured(f"Web search engine {spec!r} needs its API key in COVE_{env}_API_KEY.")
    return key


class Engines:
    """A server's engines by spec: built once each, sharing one page reader and one cache."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache = TtlCache(settings.web_search_cache_seconds, parse_size(settings.web_search_cache_size))
        self._reader: PageReader | None = None
        self._engines: dict[str, SearchEngine | None] = {}

    def get(self, spec: str) -> SearchEngine | None:
        """The engine for ``spec`` (None for ``upstream``); SearchNotConfigured when it cannot work.
        A failure is not kept: an index built later is found on the next request."""
        key = spec.strip()
        if key not in self._engines:
            if self._reader is None and parse_spec(key)[0] in ("searxng", "brave", "tavily"):
                self._reader = PageReader.from_settings(self.settings)
            self._engines[key] = engine_for(key, self.settings, self._reader, self.cache)
        return self._engines[key]

    async def aclose(self) -> None:
        for engine in self._engines.values():
            if engine is not None:
                await engine.aclose()
        if self._reader is not None:
            await self._reader.aclose()
