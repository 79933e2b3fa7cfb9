"""Parsing a web search spec (``COVE_WEB_SEARCH``, a project's ``web_search``) without building
anything: the projects file checks its specs with it when the server starts, cheaply.

``index:NAME``, ``searxng:BASE_URL``, ``brave``, ``tavily`` or ``upstream`` (``docs/search.md``).
"""

from __future__ import annotations

import re
from typing import Literal

from cove.search.base import SearchNotConfigured
from cove.search.text import web_url

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""An index's name: no dots, so ``NAME.<id>`` build directories never collide with another name."""


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise SearchNotConfigured(f"{name!r} is not an index name: use 1-64 lowercase letters, digits, '_' "
                                  "or '-', starting with a letter or digit.")
    return name


Kind = Literal["index", "searxng", "brave", "tavily", "upstream"]
SPECS = "index:NAME, searxng:BASE_URL, brave, tavily or upstream"
_BARE: dict[str, Kind] = {"brave": "brave", "tavily": "tavily", "upstream": "upstream"}
"""The specs that take no argument."""


def parse_spec(spec: str) -> tuple[Kind, str]:
    """The engine kind and its argument (index name, base URL, or empty), or SearchNotConfigured."""
    kind, sep, argument = spec.strip().partition(":")
    if kind in _BARE and not sep:
        return _BARE[kind], ""
    if kind == "index" and sep:
        return "index", check_name(argument)
    if kind == "searxng" and sep:
        if web_url(argument) is None:
            raise SearchNotConfigured(f"searxng:{argument} does not name the instance's base URL "
                                      "(searxng:https://search.example.org).")
        return "searxng", argument
    raise SearchNotConfigured(f"Web search engine {spec!r} is not one Cove knows: use {SPECS}.")


