"""The hosted ``mcp`` tool: Cove, not the upstream, connects to a remote MCP server, lists its tools and
calls them, as OpenAI's Responses API does (``docs/mcp.md``).

Once per conversation chain, before the first model turn, a server's tools are listed into an
``mcp_list_tools`` item (``response.mcp_list_tools.in_progress`` / ``.completed`` / ``.failed``); a later
response of the chain, or a client sending the item back, reuses it instead of listing again. Each
listed tool is offered to the model as a function named ``<server_label>__<tool>`` (Chat and Responses
upstreams alike: the connection is Cove's), and each call becomes one ``mcp_call`` item holding its
arguments and its ``output`` or ``error``, streamed as ``response.mcp_call_arguments.delta`` / ``.done``,
``response.mcp_call.in_progress`` and ``.completed`` or ``.failed``.

``require_approval`` (``always`` unless it says ``never`` or names tools) holds a call: the response ends
with an ``mcp_approval_request`` and the client's ``mcp_approval_response`` releases it (the call is
made and its ``mcp_call`` names the request) or refuses it (the model reads that it was refused).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, ClassVar, Literal

from openai.types.responses.tool_param import Mcp
from pydantic import BaseModel, ConfigDict, PrivateAttr

from cove.errors import InvalidRequest
from cove.ids import new_id
from cove.tools.base import HostedTool, ToolArgumentsError, ToolConfig, ToolRun, parse_arguments
from cove.tools.events import EventSink
from cove.tools.mcp_client import McpFailure, url_parts
from cove.tools.workspace import Workspace

LIST_TYPE = "mcp_list_tools"
REQUEST_TYPE = "mcp_approval_request"
ANSWER_TYPE = "mcp_approval_response"
SEPARATOR = "__"
_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_FUNCTION = 64
MAX_TOOLS = 200
"""Tools of one server offered to the model (a hostile server's listing may be endless)."""
MAX_DESCRIPTION = 4_000
MAX_OUTPUT = 100_000
"""Characters of a tool's output kept (the model reads them; the rest is cut with a note)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolFilter(_Strict):
    read_only: bool | None = None
    tool_names: list[str] | None = None

    def matches(self, tool: dict[str, Any]) -> bool:
        """Whether ``tool`` (as listed) is one this filter names (by name, or as read-only)."""
        named = self.tool_names is not None and tool.get("name") in self.tool_names
        read_only = self.read_only is not None and bool((tool.get("annotations") or {}).get("readOnlyHint")) \
            == self.read_only
        return named or read_only


class ApprovalFilter(_Strict):
    always: ToolFilter | None = None
    never: ToolFilter | None = None


class McpConfig(ToolConfig):
    type: Literal["mcp"]
    server_label: str
    server_url: str | None = None
    connector_id: str | None = None
    tunnel_id: str | None = None
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None
    allowed_tools: list[str] | ToolFilter | None = None
    authorization: str | None = None
    headers: dict[str, str] | None = None
    require_approval: Literal["always", "never"] | ApprovalFilter | None = None
    server_description: str | None = None
    defer_loading: bool | None = None
    command: list[str] | None = None
    """Cove's extension: the argv of an MCP server run in the response's container, over stdio."""
    _listing: list[dict[str, Any]] | None = PrivateAttr(default=None)
    """The server's allowed tools, once listed (or read back from the chain's ``mcp_list_tools``)."""

    def allows(self, tool: dict[str, Any]) -> bool:
        allowed = self.allowed_tools
        if allowed is None:
            return True
        return tool.get("name") in allowed if isinstance(allowed, list) else allowed.matches(tool)

    def needs_approval(self, tool: dict[str, Any]) -> bool:
        """OpenAI's rule: every call needs the client's approval unless ``never`` (or a ``never`` filter
        naming the tool) says otherwise; a filter with ``always`` holds only the tools it names."""
        rule = self.require_approval
        if rule is None or rule == "always":
            return True
        if rule == "never":
            return False
        assert isinstance(rule, ApprovalFilter)
        if rule.never is not None and rule.never.matches(tool):
            return False
        return rule.always is None or rule.always.matches(tool)


def function_name(label: str, tool: str) -> str:
    return (label + SEPARATOR + _UNSAFE.sub("_", tool))[:MAX_FUNCTION]


class McpTool(HostedTool):
    types: ClassVar[tuple[str, ...]] = ("mcp",)
    config: ClassVar[type[ToolConfig]] = McpConfig
    sdk_type: ClassVar[type | None] = Mcp
    extensions: ClassVar[tuple[str, ...]] = ("command",)
    name = "mcp"
    call_type = "mcp_call"
    output_type = "mcp_call"
    other_items: ClassVar[tuple[str, ...]] = (LIST_TYPE, REQUEST_TYPE, ANSWER_TYPE)
    container = False

    def __init__(self, config: McpConfig | None = None, tool: dict[str, Any] | None = None) -> None:
        self.bound = config
        """The request's entry this instance calls tools of (``bind``)."""
        self.tool = tool or {}
        """The listed tool it calls."""

    # -- the request ------------------------------------------------------------------------------
    def check(self, config: ToolConfig, param: str) -> None:
        assert isinstance(config, McpConfig)
        if not _LABEL.match(config.server_label):
            raise InvalidRequest(f"Invalid value for '{param}.server_label': letters, digits, '_' and '-' only "
                                 "(at most 40).", param=f"{param}.server_label", code="invalid_value")
        for field in ("connector_id", "tunnel_id"):
            if getattr(config, field) is not None:
                raise InvalidRequest(f"'{param}.{field}' is not supported by this server: give server_url.",
                                     param=f"{param}.{field}", code="invalid_value")
        if (config.server_url is None) == (config.command is None):
            raise InvalidRequest(f"'{param}' needs exactly one of server_url or command.", param=f"{param}.server_url",
                                 code="missing_required_parameter" if config.server_url is None else "invalid_value")
        if config.command is not None:
            if not config.command or not all(isinstance(arg, str) and arg and "\0" not in arg
                                              for arg in config.command):
                raise InvalidRequest(f"Invalid value for '{param}.command': a non-empty argv of non-empty strings.",
                                     param=f"{param}.command", code="invalid_value")
            if config.headers or config.authorization:
                raise InvalidRequest(f"'{param}' runs its server in the container: headers and authorization "
                                     "belong to a server_url.", param=f"{param}.headers", code="invalid_value")
            return
        if config.server_url is not None and url_parts(config.server_url) is None:
            raise InvalidRequest(f"Invalid value for '{param}.server_url': an http(s) URL without credentials.",
                                 param=f"{param}.server_url", code="invalid_url")
        if config.headers and any(_bad_header(k, v) for k, v in config.headers.items()):
            raise InvalidRequest(f"Invalid value for '{param}.headers': header names and values may not hold "
                                 "control characters.", param=f"{param}.headers", code="invalid_value")

    def settle(self, config: ToolConfig, entries: list[tuple[Any, ToolConfig]]) -> None:
        assert isinstance(config, McpConfig)
        labels = [entry.server_label for tool, entry in entries if isinstance(entry, McpConfig)]
        if labels.count(config.server_label) > 1:
            raise InvalidRequest(f"Two mcp tools have the server_label {config.server_label!r}.", param="tools",
                                 code="duplicate_tool_name")

    def uses_container(self, config: ToolConfig) -> bool:
        """A server run over stdio (``command``) runs in the response's container."""
        return isinstance(config, McpConfig) and config.command is not None

    # -- what a model sees ------------------------------------------------------------------------
    def function_names(self, config: ToolConfig) -> list[str]:
        assert isinstance(config, McpConfig)
        return [function_name(config.server_label, tool["name"]) for tool in config._listing or []]

    def function(self, config: ToolConfig) -> dict[str, Any]:
        tools = self.model_tools(config, False)
        return tools[0] if tools else {}

    def model_tools(self, config: ToolConfig, native: bool) -> list[dict[str, Any]]:
        assert isinstance(config, McpConfig)
        about = f" (MCP server {config.server_label}" + (f": {config.server_description})" if
                                                          config.server_description else ")")
        return [{"type": "function", "name": function_name(config.server_label, tool["name"]),
                 "description": ((tool.get("description") or tool["name"]) + about)[:MAX_DESCRIPTION],
                 "parameters": _schema(tool.get("input_schema"))}
                for tool in config._listing or []]

    def bind(self, config: ToolConfig, function: str) -> HostedTool:
        assert isinstance(config, McpConfig)
        tool = next((tool for tool in config._listing or []
                     if function_name(config.server_label, tool["name"]) == function), {"name": function})
        return McpTool(config, tool)

    def model_context(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """An ``mcp_call`` as the function call it was and its output; listings and approval requests are
        for the client (a refused request is read through its answer, ``answer_context``)."""
        if item.get("type") != self.call_type:
            return []
        call_id = item.get("id") or new_id("mcp")
        name = function_name(str(item.get("server_label")), str(item.get("name")))
        return [{"type": "function_call", "id": new_id("fc"), "call_id": call_id, "name": name,
                 "arguments": item.get("arguments") or "{}"},
                {"type": "function_call_output", "id": new_id("fco"), "call_id": call_id,
                 "output": self.output_text(item)}]

    @staticmethod
    def answer_context(answer: dict[str, Any], request: dict[str, Any] | None) -> list[dict[str, Any]]:
        """A refused approval as the model reads it: the call it asked for and that it was not made."""
        if answer.get("approve") or request is None:
            return []
        call_id = str(answer.get("approval_request_id"))
        reason = f" Reason: {answer['reason']}" if answer.get("reason") else ""
        name = function_name(str(request.get("server_label")), str(request.get("name")))
        return [{"type": "function_call", "id": new_id("fc"), "call_id": call_id, "name": name,
                 "arguments": request.get("arguments") or "{}"},
                {"type": "function_call_output", "id": new_id("fco"), "call_id": call_id,
                 "output": f"Not run: the user did not approve this call.{reason}"}]

    def function_arguments(self, call: dict[str, Any]) -> dict[str, Any]:
        return parse_arguments(str(call.get("arguments") or "{}"))

    def output_text(self, output: dict[str, Any]) -> str:
        error = output.get("error")
        if error:
            if isinstance(error, dict):
                detail = error.get("message") or _content_text(error.get("content"))
                return f"Error: {detail or error.get('type')}"
            return f"Error: {error}"
        return str(output.get("output") or "")

    # -- listing ----------------------------------------------------------------------------------
    async def list_tools(self, config: McpConfig, context: list[dict[str, Any]], run: ToolRun) -> dict[str, Any] | None:
        """Makes ``config``'s tools known: from the chain's ``mcp_list_tools`` for this server when it has
        one (nothing is emitted), else listed now into a new item (returned, for the context)."""
        earlier = next((item for item in reversed(context) if item.get("type") == LIST_TYPE
                        and item.get("server_label") == config.server_label and not item.get("error")), None)
        if earlier is not None:
            config._listing = _usable(config, [tool for tool in earlier.get("tools") or [] if isinstance(tool, dict)])
            return None
        item: dict[str, Any] = {"id": new_id("mcpl"), "type": LIST_TYPE, "server_label": config.server_label,
                                "tools": []}
        index = await run.events.add_item(item)
        await _emit(run.events, "response.mcp_list_tools.in_progress", item, index)
        try:
            if run.mcp is None:
                raise McpFailure({}, "MCP is not available on this server.")
            listed = await (await run.mcp.session(config, run.workspace)).list_tools()
        except McpFailure as exc:
            item["error"] = exc.message
            await _emit(run.events, "response.mcp_list_tools.failed", item, index)
            await run.events.done_item(item)
            config._listing = []
            return item
        item["tools"] = _usable(config, listed)
        config._listing = item["tools"]
        await _emit(run.events, "response.mcp_list_tools.completed", item, index)
        await run.events.done_item(item)
        return item

    # -- a call -----------------------------------------------------------------------------------
    def _call(self, arguments: str, status: str) -> dict[str, Any]:
        assert self.bound is not None
        return {"id": new_id("mcp"), "type": self.call_type, "status": status, "server_label": self.bound.server_label,
                "name": str(self.tool.get("name")), "arguments": arguments}

    async def call_item(self, call_id: str, arguments: dict[str, Any], workspace: Workspace) -> dict[str, Any]:
        if "input_schema" not in self.tool:
            raise ToolArgumentsError(f"The MCP server has no tool {self.tool.get('name')!r}.")
        return self._call(json.dumps(arguments, ensure_ascii=False), "in_progress")

    async def refused(self, call_id: str, arguments: str, message: str,
                      workspace: Workspace) -> tuple[dict[str, Any], dict[str, Any]]:
        call = {**self._call(arguments, "failed"), "error": {"type": "mcp_tool_execution_error",
                                                             "content": [{"type": "text", "text": message}]}}
        return call, call

    def held(self, call: dict[str, Any]) -> bool:
        return call.get("type") == self.call_type and self.bound is not None and self.bound.needs_approval(self.tool)

    async def emit_call(self, call: dict[str, Any], run: ToolRun) -> None:
        if self.held(call):  # the client's word first: the response ends with the request
            call.update(type=REQUEST_TYPE, id=new_id("mcpr"))
            for key in ("status",):
                call.pop(key, None)
            await run.events.item(call)
            return
        index = await run.events.add_item(call)
        await run.events.emit({"type": "response.mcp_call_arguments.delta", "item_id": call["id"],
                               "output_index": index, "delta": call["arguments"]})
        await run.events.emit({"type": "response.mcp_call_arguments.done", "item_id": call["id"],
                               "output_index": index, "arguments": call["arguments"]})
        await _emit(run.events, "response.mcp_call.in_progress", call, index)

    async def run(self, call: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        assert self.bound is not None
        index = run.events.index_of(call)
        started = time.perf_counter()
        try:
            if run.mcp is None:
                raise McpFailure({"type": "http_error", "code": 503, "message": "MCP is not available."},
                                 "MCP is not available on this server.")
            session = await run.mcp.session(self.bound, run.workspace)
            output = await session.call(call["name"], parse_arguments(call["arguments"]))
        except McpFailure as exc:
            if run.mcp is not None:
                outcome = str(exc.error.get("type") or "failed")
                run.mcp.record(self.bound, call["name"], time.perf_counter() - started, outcome)
            error = exc.error or {"type": "http_error", "code": 502, "message": exc.message}
            call.update(status="failed", error=error)
            await _emit(run.events, "response.mcp_call.failed", call, index)
            await run.events.done_item(call)
            return call
        run.mcp.record(self.bound, call["name"], time.perf_counter() - started, "completed")
        if len(output) > MAX_OUTPUT:
            output = output[:MAX_OUTPUT] + f"\n[cut: {len(output) - MAX_OUTPUT} more characters]"
        call.update(status="completed", output=output)
        await _emit(run.events, "response.mcp_call.completed", call, index)
        await run.events.done_item(call)
        return call

    async def resume(self, call: dict[str, Any], answer: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        """An approval request the client answered: approved, the call is made now (its ``mcp_call`` names
        the request); refused, nothing runs and the answer stays in the context (``answer_context``)."""
        if not answer.get("approve"):
            return answer
        item = {**self._call(str(call.get("arguments") or "{}"), "in_progress"),
                "approval_request_id": call.get("id")}
        index = await run.events.add_item(item)
        await _emit(run.events, "response.mcp_call.in_progress", item, index)
        return await self.run(item, run)


def approvals(context: list[dict[str, Any]], new_items: list[dict[str, Any]]
              ) -> list[tuple[dict[str, Any], dict[str, Any], int]]:
    """The approval requests (in ``context``) the request's own input answers, with the answer and its
    position; an answer to no request is refused (``InvalidRequest`` naming ``input[i]``). A request
    already answered by an ``mcp_call`` (a stateless client sending the chain again) is not run twice."""
    if not any(item.get("type") == ANSWER_TYPE for item in new_items):
        return []
    requests = {item.get("id"): item for item in context if item.get("type") == REQUEST_TYPE}
    done = {item.get("approval_request_id") for item in context if item.get("type") == "mcp_call"}
    pairs = []
    for index, item in enumerate(new_items):
        if item.get("type") != ANSWER_TYPE:
            continue
        request = requests.get(item.get("approval_request_id"))
        if request is None:
            where = f"input[{index}].approval_request_id"
            raise InvalidRequest(f"Invalid value for '{where}': no mcp_approval_request "
                                 f"{item.get('approval_request_id')!r} in this conversation.", param=where,
                                 code="invalid_value")
        if request.get("id") not in done:
            pairs.append((request, item, index))
    return pairs


def _usable(config: McpConfig, listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The allowed tools of a listing as the item keeps them: each function name once (a name that only
    differs in characters a function cannot carry would call another tool), descriptions bounded, at
    most ``MAX_TOOLS``."""
    kept: dict[str, dict[str, Any]] = {}
    for tool in listed:
        name = tool.get("name")
        if not isinstance(name, str) or not name or not config.allows(tool):
            continue
        function = function_name(config.server_label, name)
        if function in kept or len(kept) >= MAX_TOOLS:
            continue
        description = tool.get("description")
        kept[function] = {"name": name, "description": description[:MAX_DESCRIPTION] if isinstance(description, str)
                          else None, "input_schema": _schema(tool.get("inputSchema", tool.get("input_schema"))),
                          "annotations": tool.get("annotations")}
    return list(kept.values())


def _bad_header(name: str, value: str) -> bool:
    return any(ord(char) < 32 or ord(char) == 127 for char in name + value) or not name.strip()


def _schema(schema: Any) -> dict[str, Any]:
    """A tool's input schema as a function's parameters (an object schema, whatever the server sent)."""
    if isinstance(schema, dict) and schema.get("type") == "object":
        return schema
    return {"type": "object", "properties": {}}


def _content_text(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))


async def _emit(events: EventSink, kind: str, item: dict[str, Any], index: int) -> None:
    await events.emit({"type": kind, "item_id": item["id"], "output_index": index})
