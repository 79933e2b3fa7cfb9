"""Bounding and cleaning what engines return, and matching ``filters.allowed_domains``.

Everything an engine answers is hostile: a snippet may carry markup (Brave wraps matches in
``<strong>``), entities, control characters or megabytes of text. The model sees plain text of a
known size, whatever the engine sent.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

from cove.egress.policy import normalize_host
from cove.errors import InvalidRequest
from cove.search.base import ContextSize

RESULTS: dict[ContextSize, int] = {"low": 5, "medium": 10, "high": 20}
"""Hits an engine returns per ``search_context_size``."""
SNIPPET_CHARS: dict[ContextSize, int] = {"low": 300, "medium": 600, "high": 1200}
"""Characters of each hit's snippet per ``search_context_size``."""
MAX_QUERY_CHARS = 400
"""Longest query an engine is asked (Brave's documented limit; the others take about as much, and
the offline index gets no slower than a few dozen words make it)."""
MAX_TITLE = 300
MAX_URL = 2048
MAX_PAGE_CHARS = 500_000
"""Characters of a page's text kept (the tool shows the model less; this bounds memory and the cache)."""

_TAG = re.compile(r"<[^>]{0,2000}>")
_SPACE = re.compile(r"\s+")


def plain(text: object, limit: int) -> str:
    """``text`` as one line of plain text: tags dropped, entities decoded, whitespace collapsed, cut
    at ``limit`` characters (with an ellipsis). Anything but a string is empty."""
    if not isinstance(text, str):
        return ""
    cleaned = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text[: limit * 8]))).strip()
    cleaned = "".join(ch for ch in cleaned if ch.isprintable())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1].rstrip() + "…"


def page_text(text: str) -> str:
    """A page's extracted text, bounded and without control characters (line breaks kept)."""
    kept = "".join(ch for ch in text[:MAX_PAGE_CHARS] if ch.isprintable() or ch in "\n\t")
    if len(text) > MAX_PAGE_CHARS:
        kept += f"\n[... {len(text) - MAX_PAGE_CHARS} more characters not shown]"
    return kept


def web_url(url: object) -> str | None:
    """``url`` if it is an absolute http(s) URL of sane length with a host, else None."""
    if not isinstance(url, str) or len(url) > MAX_URL or any(ch.isspace() for ch in url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and host else None


def normalize_domains(domains: tuple[str, ...] | list[str], param: str = "filters.allowed_domains") -> tuple[str, ...]:
    """``filters.allowed_domains`` in canonical form (``https://`` and paths dropped, as OpenAI
    accepts ``openai.com`` and ``https://openai.com/``); a malformed entry is a 400 naming it."""
    result: list[str] = []
    for index, entry in enumerate(domains):
        bare = entry.strip()
        if "://" in bare:
            bare = bare.split("://", 1)[1]
        bare = bare.split("/", 1)[0].removeprefix("*.")
        try:
            result.append(normalize_host(bare))
        except ValueError as exc:
            raise InvalidRequest(f"Invalid domain {entry!r}: {exc}", param=f"{param}[{index}]") from exc
    return tuple(dict.fromkeys(result))


def in_domains(url: str, domains: tuple[str, ...]) -> bool:
    """Whether ``url``'s host is one of ``domains`` or a subdomain of one (empty: any)."""
    if not domains:
        return True
    try:
        host = normalize_host(urlsplit(url).hostname or "")
    except ValueError:
        return False
    wanted = normalize_domains(domains)
    return any(host == domain or host.endswith("." + domain) for domain in wanted)


def with_sites(text: str, domains: tuple[str, ...]) -> str:
    """The query with ``site:`` operators for ``domains``, for engines that pass them on (SearXNG's
    upstream engines, Brave): the results are still filtered, this only asks for the right ones."""
    if not domains:
        return text
    sites = " OR ".join(f"site:{domain}" for domain in normalize_domains(domains))
    return f"{text} ({sites})" if len(domains) > 1 else f"{text} {sites}"
