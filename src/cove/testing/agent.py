"""One response run through the real agent loop, in-process, with whatever model and workspace a test gives."""

from __future__ import annotations

from typing import Any

from cove.agent.builder import ResponseBuilder
from cove.agent.items import normalize_input
from cove.agent.loop import Turn, run_response
from cove.agent.request import CreateParams
from cove.agent.response_object import new_response
from cove.search.base import SearchEngine
from cove.tools.mcp_client import McpAccess
from cove.tools.workspace import Workspace
from cove.upstream.base import Model


async def run_turns(model: Model, params: CreateParams, workspace: Workspace | None = None,
                    history: list[dict[str, Any]] | None = None, max_turns: int = 50,
                    steering: list[Any] | None = None, search: SearchEngine | None = None,
                    upstream_search: bool = False, mcp: McpAccess | None = None
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validates ``params`` as a request would be, runs the loop to its end (at most ``max_turns`` model
    turns, as ``COVE_MAX_TURNS`` sets for the server) and returns the response object and every stream
    event (numbered as a stream is). ``steering``: input queued into the response (``Turn.steering``);
    ``search``: the engine ``web_search`` calls use (``upstream_search``: the model's own); ``mcp``: the
    response's MCP connections."""
    params.check()
    response = new_response("resp_test", params)
    events: list[dict[str, Any]] = []

    async def collect(event: dict[str, Any]) -> None:
        events.append({**event, "sequence_number": len(events)})

    builder = ResponseBuilder(response, collect)
    new_items = normalize_input(params.input)
    context = [*(history or []), *new_items]
    await run_response(Turn(model, params.model, params, context, params.toolbox, workspace,
                              max_turns=max_turns, steering=steering if steering is not None else [],
                              released=params.toolbox.released(context, new_items),
                              search=search, upstream_search=upstream_search, mcp=mcp), builder)
    return response, events
