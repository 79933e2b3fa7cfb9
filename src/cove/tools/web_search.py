"""The hosted ``web_search`` tool (and ``web_search_preview``): Cove searches and reads pages itself,
with the engine the operator configured (``cove.search``), and feeds the model what it found.

A chat model sees three functions, ``web_search(query)``, ``open_page(url)`` and
``find_in_page(url, pattern)``, rather than one with an ``action`` field: small open models fill a few
required arguments of a well-named function far more reliably than a discriminator with fields that
depend on it, and gpt-oss was trained on the same three (its browser's search, open and find). Each
call is one ``web_search_call`` item whose ``action`` says which (``search`` with ``query`` and
``sources``, ``open_page`` with ``url``, ``find_in_page`` with ``url`` and ``pattern``), streamed as
``response.web_search_call.in_progress``, ``.searching`` and ``.completed``.

What the model was shown stays on the item as ``results`` (numbered sources, ``citations.py``), so
later turns, and later responses of a chain, read the same text; clients see ``results`` only with
``include: ["web_search_call.results"]`` and ``action.sources`` only with
``web_search_call.action.sources`` (``agent/includes.py``). Everything an engine returns is hostile:
URLs are checked (``SCHEMES``), text is cut to ``search_context_size`` and stripped of control characters, and
``filters.allowed_domains`` is enforced here too, whatever the engine does with it. An engine that
fails (``SearchFailed``) ends the call ``failed`` with the reason the model reads; the response goes on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from openai.types.responses import WebSearchPreviewToolParam, WebSearchToolParam
from pydantic import BaseModel, ConfigDict

from cove.errors import InvalidRequest
from cove.ids import new_id
from cove.search.base import ContextSize, Page, Query, SearchEngine, SearchFailed
from cove.tools.base import HostedTool, ToolArgumentsError, ToolConfig, ToolRun, parse_arguments
from cove.tools.citations import CALL_TYPE, Sources
from cove.tools.events import EventSink
from cove.tools.workspace import Workspace

Action = Literal["search", "open_page", "find_in_page"]
FUNCTIONS: dict[str, Action] = {"web_search": "search", "open_page": "open_page", "find_in_page": "find_in_page"}
_FUNCTION_OF: dict[str, str] = {action: function for function, action in FUNCTIONS.items()}

MAX_DOMAINS = 100
MAX_QUERY = 1_000
MAX_URL = 2_048
MAX_TITLE = 200


@dataclass(frozen=True)
class _Budget:
    """How much of what it finds the model is shown, by ``search_context_size``."""

    hits: int
    snippet: int
    page: int
    matches: int
    around: int


BUDGETS: dict[ContextSize, _Budget] = {
    "low": _Budget(hits=3, snippet=300, page=3_000, matches=3, around=150),
    "medium": _Budget(hits=6, snippet=500, page=8_000, matches=6, around=250),
    "high": _Budget(hits=10, snippet=800, page=20_000, matches=12, around=400),
}

_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
"""A single-label name: an intranet host, or an offline index's ZIM archive (``zim://ARCHIVE/...``)."""
SCHEMES = frozenset({"http", "https", "file", "zim"})
"""URLs engines hand out: web pages, and the offline index's files and ZIM entries. What can really be
read is the engine's business (page reads are http(s) only; the index opens only what it holds)."""
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Filters(_Strict):
    allowed_domains: list[str] | None = None


class Location(_Strict):
    """``user_location`` of ``web_search``: ``type`` may be left out."""

    type: Literal["approximate"] = "approximate"
    city: str | None = None
    country: str | None = None
    region: str | None = None
    timezone: str | None = None


class PreviewLocation(Location):
    """``user_location`` of ``web_search_preview``: ``type`` is required, as the SDK types it."""

    type: Literal["approximate"]


class WebSearchConfig(ToolConfig):
    type: Literal["web_search", "web_search_2025_08_26"]
    external_web_access: bool | None = None
    """Accepted; the operator's engine decides what is live (an offline index never is)."""
    filters: Filters | None = None
    search_context_size: ContextSize = "medium"
    user_location: Location | None = None


class WebSearchPreviewConfig(ToolConfig):
    type: Literal["web_search_preview", "web_search_preview_2025_03_11"]
    search_content_types: list[Literal["text", "image"]] | None = None
    """Accepted; results are text."""
    search_context_size: ContextSize = "medium"
    user_location: PreviewLocation | None = None


def normalize_domain(raw: str) -> str | None:
    """A domain of ``filters.allowed_domains`` as Cove matches it (lower case, IDNA, no scheme or
    trailing slash, which OpenAI allows), or None when it is not a domain name (or a single-label
    name, ``_NAME``)."""
    text = raw.strip().lower()
    for prefix in ("https://", "http://"):
        text = text.removeprefix(prefix)
    text = text.rstrip("/").rstrip(".")
    try:
        text = text.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return text if _DOMAIN.match(text) or (_NAME.match(text) and not text.isdigit()) else None


def within(url: str, domains: tuple[str, ...]) -> bool:
    """Whether ``url`` is a URL an engine may give (``SCHEMES``; http(s) with a host) on one of
    ``domains`` or their subdomains (any, when none; a ``file://`` URL, which has no host, on none)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return False
    if parts.scheme not in SCHEMES or (parts.scheme in ("http", "https") and not host):
        return False
    return not domains or any(host == domain or host.endswith("." + domain) for domain in domains)


def _clean(text: str, limit: int) -> str:
    """Hostile text as the model may read it: no control or direction characters, at most ``limit``."""
    cleaned = _CONTROL.sub("", text).strip()
    return cleaned if len(cleaned) <= limit else cleaned[:limit].rstrip() + " …"


def _line(text: str, limit: int) -> str:
    return _clean(" ".join(text.split()), limit)


class WebSearchTool(HostedTool):
    types: ClassVar[tuple[str, ...]] = ("web_search", "web_search_2025_08_26")
    config: ClassVar[type[ToolConfig]] = WebSearchConfig
    sdk_type: ClassVar[type | None] = WebSearchToolParam
    name = "web_search"
    call_type = CALL_TYPE
    output_type = CALL_TYPE
    container = False

    def __init__(self, action: Action = "search", options: Query | None = None) -> None:
        self.action: Action = action
        """Which of its functions this instance runs (``bind``)."""
        self.options = options or Query("")
        """The request's domains, context size and location (``text`` unused)."""

    # -- the request ------------------------------------------------------------------------------
    @staticmethod
    def _allowed(config: ToolConfig) -> list[str]:
        """``filters.allowed_domains`` as the request gives it (``web_search_preview`` has no filters)."""
        filters = getattr(config, "filters", None)
        return (filters.allowed_domains if isinstance(filters, Filters) else None) or []

    def domains(self, config: ToolConfig) -> tuple[str, ...]:
        return tuple(dict.fromkeys(domain for domain in map(normalize_domain, self._allowed(config)) if domain))

    def check(self, config: ToolConfig, param: str) -> None:
        raw = self._allowed(config)
        where = f"{param}.filters.allowed_domains"
        if len(raw) > MAX_DOMAINS:
            raise InvalidRequest(f"'{where}' may list at most {MAX_DOMAINS} domains.", param=where,
                                 code="invalid_value")
        for index, domain in enumerate(raw):
            if normalize_domain(domain) is None:
                raise InvalidRequest(f"Invalid value for '{where}[{index}]': {domain!r} is not a domain name "
                                     "(e.g. 'docs.python.org').", param=f"{where}[{index}]", code="invalid_value")

    def query_options(self, config: ToolConfig) -> Query:
        assert isinstance(config, WebSearchConfig | WebSearchPreviewConfig)
        location = config.user_location.model_dump(exclude_none=True, exclude={"type"}) if config.user_location else {}
        return Query("", self.domains(config), config.search_context_size, location)

    def bind(self, config: ToolConfig, function: str) -> HostedTool:
        return type(self)(FUNCTIONS.get(function, "search"), self.query_options(config))

    # -- what a chat model sees -------------------------------------------------------------------
    def function_names(self, config: ToolConfig) -> list[str]:
        return list(FUNCTIONS)

    def function(self, config: ToolConfig) -> dict[str, Any]:
        return self._functions(config)[0]

    def model_tools(self, config: ToolConfig, native: bool) -> list[dict[str, Any]]:
        return self._functions(config)

    def upstream_form(self, config: ToolConfig) -> dict[str, Any]:
        """The tool as the client gave it, for a Responses upstream that searches itself
        (``COVE_WEB_SEARCH=upstream``)."""
        return config.model_dump(exclude_none=True)

    def _functions(self, config: ToolConfig) -> list[dict[str, Any]]:
        domains = self.domains(config)
        only = f" Only these sites (and their subdomains) can be searched and read: {', '.join(domains)}." \
            if domains else ""
        url = {"type": "string", "description": "The page's URL, e.g. one from the search results."}
        return [
            {"type": "function", "name": "web_search", "description": (
                "Search the web. Returns numbered results (title, URL, snippet). Cite what you use in your "
                "answer with its number in brackets, like [1]." + only),
             "parameters": {"type": "object", "properties": {
                 "query": {"type": "string", "description": "What to search for."}}, "required": ["query"]}},
            {"type": "function", "name": "open_page", "description": (
                "Read a web page's main text (long pages are cut; use find_in_page for the rest). Cite it "
                "with its number, like [2]." + only),
             "parameters": {"type": "object", "properties": {"url": url}, "required": ["url"]}},
            {"type": "function", "name": "find_in_page", "description": (
                "Find text in a web page: returns the passages around each occurrence of pattern "
                "(case-insensitive)." + only),
             "parameters": {"type": "object", "properties": {
                 "url": url, "pattern": {"type": "string", "description": "The text to look for."}},
                 "required": ["url", "pattern"]}},
        ]

    def function_arguments(self, call: dict[str, Any]) -> dict[str, Any]:
        action = call.get("action") or {}
        keys = {"search": ("query",), "open_page": ("url",), "find_in_page": ("url", "pattern")}
        return {key: action.get(key) or "" for key in keys.get(str(action.get("type")), ("query",))}

    def model_context(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """A ``web_search_call`` as the function call it was and its result: it has no ``call_id``, so
        its ``id`` pairs the two."""
        if item.get("type") != CALL_TYPE:
            return []
        action = str((item.get("action") or {}).get("type"))
        call_id = item.get("id") or new_id("ws")
        arguments = json.dumps(self.function_arguments(item), ensure_ascii=False)
        return [{"type": "function_call", "id": new_id("fc"), "call_id": call_id,
                 "name": _FUNCTION_OF.get(action, "web_search"), "arguments": arguments},
                {"type": "function_call_output", "id": new_id("fco"), "call_id": call_id,
                 "output": self.output_text(item)}]

    def as_native(self, item: dict[str, Any]) -> dict[str, Any]:
        """For a Responses upstream that searches itself: the item as OpenAI knows it."""
        return {key: value for key, value in item.items() if key not in ("results", "error")}

    def output_text(self, output: dict[str, Any]) -> str:
        """What the model reads for a call, rebuilt from the item the same way every time."""
        if output.get("status") == "failed":
            return f"Error: {output.get('error') or 'the web search failed.'}"
        action = output.get("action") or {}
        results = output.get("results")
        if results is None:
            return "(The results of this web search call were not kept.)"
        kind = action.get("type")
        if kind == "search":
            if not results:
                return f"No results for {action.get('query')!r}."
            entries = "\n\n".join(f"[{r['index']}] {r['title']}\n{r['url']}\n{r['text']}" for r in results)
            return f"Results for {action.get('query')!r} (cite a result by its number, e.g. [{results[0]['index']}]):" \
                   f"\n\n{entries}"
        page = results[0] if results else {}
        if kind == "find_in_page":
            found = page.get("text") or f"{action.get('pattern')!r} does not occur in this page."
            return f"In [{page.get('index')}] {page.get('title')}\n{page.get('url')}\n\n{found}"
        return f"[{page.get('index')}] {page.get('title')}\n{page.get('url')}\n\n{page.get('text')}"

    # -- a call -----------------------------------------------------------------------------------
    def _item(self, action: dict[str, Any], status: str) -> dict[str, Any]:
        return {"id": new_id("ws"), "type": self.call_type, "status": status, "action": action}

    async def call_item(self, call_id: str, arguments: dict[str, Any], workspace: Workspace) -> dict[str, Any]:
        if self.action == "search":
            query = arguments.get("query")
            if not isinstance(query, str) or not query.strip():
                raise ToolArgumentsError("`query` must be a non-empty string.")
            return self._item({"type": "search", "query": _line(query, MAX_QUERY)}, "in_progress")
        url = arguments.get("url")
        if not isinstance(url, str) or not within(url.strip(), ()) or len(url.strip()) > MAX_URL:
            raise ToolArgumentsError("`url` must be an http(s) URL, or one the search results gave.")
        url = url.strip()
        if not within(url, self.options.domains):
            raise ToolArgumentsError(f"{url} is outside the sites this search may read: "
                                     f"{', '.join(self.options.domains)}.")
        if self.action == "open_page":
            return self._item({"type": "open_page", "url": url}, "in_progress")
        pattern = arguments.get("pattern")
        if not isinstance(pattern, str) or not pattern.strip():
            raise ToolArgumentsError("`pattern` must be a non-empty string.")
        return self._item({"type": "find_in_page", "url": url, "pattern": pattern[:MAX_QUERY]}, "in_progress")

    async def refused(self, call_id: str, arguments: str, message: str,
                      workspace: Workspace) -> tuple[dict[str, Any], dict[str, Any]]:
        """One item holds the call and its result: status ``failed``, the reason in ``error``."""
        given = parse_arguments(arguments)

        def text(key: str) -> str:
            value = given.get(key)
            return _line(value, MAX_URL) if isinstance(value, str) else ""

        action: dict[str, Any] = {"type": self.action}
        if self.action == "search":
            action["query"] = text("query")
        else:
            action["url"] = text("url")
        if self.action == "find_in_page":
            action["pattern"] = text("pattern")
        call = {**self._item(action, "failed"), "error": message}
        return call, call

    @staticmethod
    async def relay(item: dict[str, Any], events: EventSink) -> None:
        """A ``web_search_call`` a Responses upstream ran itself (``upstream`` mode), finished when it
        arrives, streamed with the events OpenAI streams for one."""
        index = await events.add_item(item)
        stages = ("in_progress", "searching", *(("completed",) if item.get("status") == "completed" else ()))
        for stage in stages:
            await events.emit({"type": f"response.web_search_call.{stage}", "item_id": item.get("id"),
                               "output_index": index})
        await events.done_item(item)

    async def emit_call(self, call: dict[str, Any], run: ToolRun) -> None:
        index = await run.events.add_item(call)
        await run.events.emit({"type": "response.web_search_call.in_progress", "item_id": call["id"],
                               "output_index": index})

    async def run(self, call: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        events = run.events
        index = events.index_of(call)
        call["status"] = "searching"
        await events.emit({"type": "response.web_search_call.searching", "item_id": call["id"],
                           "output_index": index})
        try:
            if run.search is None:
                raise SearchFailed("Web search is not configured on this server.")
            await self._act(call, run.search, run.sources)
        except SearchFailed as exc:
            call.update(status="failed", error=exc.message)
            await events.done_item(call)
            return call
        call["status"] = "completed"
        await events.emit({"type": "response.web_search_call.completed", "item_id": call["id"],
                           "output_index": index})
        await events.done_item(call)
        return call

    async def _act(self, call: dict[str, Any], engine: SearchEngine, sources: Sources) -> None:
        action = call["action"]
        budget = BUDGETS[self.options.size]
        domains = self.options.domains
        if action["type"] == "search":
            query = Query(action["query"], domains, self.options.size, dict(self.options.location))
            hits = [hit for hit in await engine.search(query) if _usable(hit.url, domains)][:budget.hits]
            call["results"] = [self._numbered(sources, hit.url, hit.title, _line(hit.snippet, budget.snippet))
                               for hit in hits]
            action["sources"] = [{"type": "url", "url": hit.url} for hit in hits]
            return
        page = await engine.open(action["url"], domains)
        if not _usable(page.url, domains):
            raise SearchFailed(f"The page moved to {page.url[:MAX_URL]}, outside the sites this search may read.")
        if action["type"] == "open_page":
            text = _clean(page.text, budget.page)
            if len(page.text) > budget.page:
                text += f"\n[The page goes on for {len(page.text) - budget.page} more characters: use find_in_page.]"
        else:
            text = _find(page, action["pattern"], budget)
        call["results"] = [self._numbered(sources, page.url, page.title, text)]

    @staticmethod
    def _numbered(sources: Sources, url: str, title: str, text: str) -> dict[str, Any]:
        source = sources.number(url, _line(title, MAX_TITLE) or url)
        return {"index": source.number, "url": url, "title": source.title, "text": text}


class WebSearchPreviewTool(WebSearchTool):
    """``web_search_preview``: the same tool, typed as the SDK's preview param (no ``filters``)."""

    types = ("web_search_preview", "web_search_preview_2025_03_11")
    config = WebSearchPreviewConfig
    sdk_type = WebSearchPreviewToolParam
    owns_items = False  # web_search_call items are the web_search tool's, which reads them back


def _usable(url: str, domains: tuple[str, ...]) -> bool:
    return len(url) <= MAX_URL and not any(char.isspace() for char in url) and within(url, domains)


def _find(page: Page, pattern: str, budget: _Budget) -> str:
    """The passages around each case-insensitive occurrence of ``pattern`` (at most ``budget.matches``)."""
    text = page.text
    lowered, needle = text.lower(), pattern.lower()
    passages: list[str] = []
    start = lowered.find(needle)
    while start >= 0 and len(passages) < budget.matches:
        begin, end = max(0, start - budget.around), min(len(text), start + len(needle) + budget.around)
        passage = _line(text[begin:end], 3 * budget.around)
        passages.append(("…" if begin else "") + passage + ("…" if end < len(text) else ""))
        start = lowered.find(needle, end)
    total = lowered.count(needle)
    if total > len(passages):
        passages.append(f"[{total - len(passages)} more occurrences not shown.]")
    return "\n\n".join(passages)
