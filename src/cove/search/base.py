"""The search protocol: what the ``web_search`` tool may ask of an engine, and nothing about how.

An engine answers queries with hits and reads pages as plain text. Everything an engine returns
comes from the outside world and is hostile: the tool shows it to the model as data, bounded in
size. An engine that is down, over quota or refuses is a ``SearchFailed``: the call ends ``failed``
with a message the model reads, and the response goes on.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Literal

from cove.errors import CoveError, InvalidRequest

ContextSize = Literal["low", "medium", "high"]
"""OpenAI's ``search_context_size``: how many results, and how much of each, the model is shown."""


class SearchFailed(CoveError):
    """The engine could not answer (down, over quota, refused, a page that cannot be read); the
    message is shown to the model, so it says what happened without secrets or internals."""

    status_code = 502
    error_type = "server_error"


class SearchNotConfigured(InvalidRequest):
    """No usable engine: ``COVE_WEB_SEARCH`` (or a project's ``web_search``) is unset, malformed, names
    an index that was never built, or an engine without its key. The message names the problem; the
    tool answers 400 naming itself at request time (a configuration error, not the model's)."""

    def __init__(self, message: str, *, param: str | None = None,
                 code: str | None = "web_search_not_configured") -> None:
        super().__init__(message, param=param, code=code)


@dataclass(frozen=True)
class Hit:
    url: str
    title: str
    snippet: str
    """Text about the page as the engine gives it (plain text, bounded)."""


@dataclass(frozen=True)
class Page:
    url: str
    """Where the page ended up (after redirects the policy allowed)."""
    title: str
    text: str
    """The page's main text, extracted (HTML, Markdown, PDF or a ZIM entry as plain text)."""


@dataclass(frozen=True)
class Query:
    text: str
    domains: tuple[str, ...] = ()
    """``filters.allowed_domains``: results and page reads only from these domains (and their
    subdomains); empty: any the operator's policy allows."""
    size: ContextSize = "medium"
    location: dict[str, str] = field(default_factory=dict)
    """``user_location`` fields (country, region, city, timezone), for engines that use them."""


class SearchEngine(abc.ABC):
    """One configured engine (``COVE_WEB_SEARCH`` or a project's ``web_search``). Safe to use from
    many tasks at once."""

    name: str
    """What the operator configured (``index:docs``, ``searxng:https://...``, ``brave``), for audit
    and errors."""

    @abc.abstractmethod
    async def search(self, query: Query) -> list[Hit]:
        """Results for the query, best first, only from ``query.domains`` when given."""

    @abc.abstractmethod
    async def open(self, url: str, domains: tuple[str, ...] = ()) -> Page:
        """A page's main text; a URL outside ``domains`` (when given) or the read policy is refused
        with ``SearchFailed``."""

    async def aclose(self) -> None:  # noqa: B027  # an optional hook: most engines hold nothing
        """Release connections (at shutdown); the engine is not used afterwards."""
