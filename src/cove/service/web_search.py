"""Which web search a project's responses get: its projects-file ``web_search``, else
``COVE_WEB_SEARCH``; an engine Cove runs (``cove.search``), the model upstream's own search
(``upstream``), or none.

An engine is built on first use of its setting and kept (one per distinct setting, shared by the
projects that name it; closed at shutdown). A setting that cannot be built now is not kept, so an
offline index built after the server started is picked up. A request whose ``web_search`` tool
cannot run is refused at request time, a 400 naming ``tools[i]``: no engine configured, one that
cannot be built (its message says why), or ``upstream`` for a model whose upstream has no search of
its own (a Chat Completions server, the embedded model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cove.errors import InvalidRequest
from cove.search.base import SearchEngine
from cove.tools.toolbox import Toolbox
from cove.tools.web_search import WebSearchTool
from cove.upstream.base import Model

UPSTREAM = "upstream"
"""The setting that leaves web search to a Responses upstream that has its own (OpenAI)."""


@dataclass(frozen=True)
class SearchSetup:
    """What one response's loop gets (``Turn.search``, ``Turn.upstream_search``)."""

    engine: SearchEngine | None = None
    upstream: bool = False


class WebSearchEngines:
    def __init__(self, default: str | None = None, by_project: Mapping[str, str] | None = None,
                 build: Callable[[str], SearchEngine] | None = None) -> None:
        """``default``: ``COVE_WEB_SEARCH``; ``by_project``: projects whose own ``web_search`` is set;
        ``build``: an engine from a setting (``cove.search``'s ``engine_for``)."""
        self.default = default or None
        self.by_project = dict(by_project or {})
        self.build = build
        self.engines: dict[str, SearchEngine] = {}

    def spec(self, project: str) -> str | None:
        return self.by_project.get(project, self.default)

    def setup(self, project: str, toolbox: Toolbox, model: Model) -> SearchSetup:
        """The project's web search for a request with ``toolbox`` to ``model`` (a 400 when it has none)."""
        index = next((i for i, (tool, _config) in enumerate(toolbox.entries) if isinstance(tool, WebSearchTool)), None)
        if index is None:
            return SearchSetup()
        kind = toolbox.entries[index][1].type
        spec = self.spec(project)
        if spec is None:
            raise InvalidRequest(f"The {kind!r} tool is not available: this server has no web search engine "
                                 "configured (COVE_WEB_SEARCH, or the project's web_search).",
                                 param=f"tools[{index}]", code="tool_not_configured")
        if spec == UPSTREAM:
            if not model.native_tools:
                raise InvalidRequest(f"The {kind!r} tool is set to run on the model's upstream, and this model's "
                                     "upstream (not a Responses API server) has no web search of its own.",
                                     param=f"tools[{index}]", code="tool_not_configured")
            return SearchSetup(upstream=True)
        return SearchSetup(engine=self._engine(spec, f"tools[{index}]"))

    def _engine(self, spec: str, param: str) -> SearchEngine:
        engine = self.engines.get(spec)
        if engine is not None:
            return engine
        if self.build is None:
            raise InvalidRequest("Web search is configured, but this server was started without engines.",
                                 param=param, code="tool_not_configured")
        try:
            engine = self.engines[spec] = self.build(spec)
        except InvalidRequest as exc:  # e.g. an index not built yet, an engine without its key
            raise InvalidRequest(exc.message, param=param, code=exc.code or "tool_not_configured") from None
        return engine
