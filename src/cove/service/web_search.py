"""Which web search a project's responses get: its projects-file ``web_search``, else
``COVE_WEB_SEARCH``; an engine Cove runs (``cove.search``), the model upstream's own search
(``upstream``), or none.

The engines themselves are ``cove.search.engines.Engines``' (one per spec, built on first use, a
failure not kept, so an index built after the server started is found). A request whose web search
tool cannot run is refused at request time, a 400 naming ``tools[i]``: no engine configured, one that
cannot work now (``SearchNotConfigured``: an index not built, a key not set; its message says
which), or ``upstream`` for a model whose upstream has no search of its own (a Chat Completions
server, the embedded model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cove.errors import InvalidRequest
from cove.search.base import SearchEngine, SearchNotConfigured
from cove.search.spec import parse_spec
from cove.tools.toolbox import Toolbox
from cove.tools.web_search import WebSearchTool
from cove.upstream.base import Model

NOT_CONFIGURED = "web_search_not_configured"


@dataclass(frozen=True)
class SearchSetup:
    """What one response's loop gets (``Turn.search``, ``Turn.upstream_search``)."""

    engine: SearchEngine | None = None
    upstream: bool = False


class WebSearchEngines:
    def __init__(self, spec_of: Callable[[str], str | None] = lambda _project: None,
                 engine: Callable[[str], SearchEngine | None] | None = None) -> None:
        """``spec_of``: a project's spec (its own ``web_search``, else ``COVE_WEB_SEARCH``; None: none);
        ``engine``: the engine for a spec (``Engines.get``: None for ``upstream``)."""
        self.spec_of = spec_of
        self.engine = engine

    def setup(self, project: str, toolbox: Toolbox, model: Model) -> SearchSetup:
        """The project's web search for a request with ``toolbox`` to ``model`` (a 400 when it has none)."""
        index = next((i for i, (tool, _config) in enumerate(toolbox.entries) if isinstance(tool, WebSearchTool)), None)
        if index is None:
            return SearchSetup()
        param, kind = f"tools[{index}]", toolbox.entries[index][1].type
        spec = self.spec_of(project)
        if spec is None or self.engine is None:
            raise SearchNotConfigured(f"The {kind!r} tool is not available: this server has no web search engine "
                                      "configured (COVE_WEB_SEARCH, or the project's web_search).", param=param)
        try:
            upstream = parse_spec(spec)[0] == "upstream"
            engine = None if upstream else self.engine(spec)
        except InvalidRequest as exc:  # an index not built yet, an engine without its key ...
            raise SearchNotConfigured(exc.message, param=param, code=exc.code or NOT_CONFIGURED) from None
        if upstream and not model.native_tools:
            raise SearchNotConfigured(f"The {kind!r} tool is set to run on the model's upstream, and this model's "
                                      "upstream (not a Responses API server) has no web search of its own.",
                                      param=param)
        return SearchSetup(engine, upstream)
