"""The tools of one request: which the server runs, which the client runs, and what the model sees."""

from __future__ import annotations

from typing import Any

from cove.errors import InvalidRequest
from cove.sandbox.base import Screen
from cove.tools.base import HostedTool, Tool, ToolConfig
from cove.tools.computer import NAME as COMPUTER
from cove.tools.computer import ComputerTool, released, stale_screenshots, superseded
from cove.tools.custom import CustomTool, editor_call_ids
from cove.tools.environment import ContainerAuto, ContainerReference
from cove.tools.mcp import ANSWER_TYPE, REQUEST_TYPE, McpConfig, McpTool, approvals
from cove.tools.namespace import flatten_call
from cove.tools.registry import TOOLS
from cove.tools.web_search import WebSearchTool


class Toolbox:
    def __init__(self, tools: list[dict[str, Any]]) -> None:
        """Parses each entry against its tool's schema (``InvalidRequest`` names the first that fails)."""
        self.entries: list[tuple[Tool, ToolConfig]] = [TOOLS.parse(index, raw) for index, raw in enumerate(tools)]
        self._by_function: dict[str, tuple[Tool, ToolConfig]] = {}
        self.index()
        for tool, config in self.entries:
            tool.settle(config, self.entries)

    def index(self) -> None:
        """Which tool each function name calls; again once MCP servers' tools are listed."""
        self._by_function.clear()
        for index, (tool, config) in enumerate(self.entries):
            for name in tool.function_names(config):
                if name in self._by_function:
                    raise InvalidRequest(f"Two tools are called {name!r}: tool names must be unique.",
                                         param=f"tools[{index}]", code="duplicate_tool_name")
                self._by_function[name] = (tool, config)

    @property
    def mcp_servers(self) -> list[McpConfig]:
        """The request's ``mcp`` entries."""
        return [config for _tool, config in self.entries if isinstance(config, McpConfig)]

    def check(self) -> None:
        """The rules beyond each tool's schema (network policies, files), for a request being created."""
        for index, (tool, config) in enumerate(self.entries):
            tool.check(config, f"tools[{index}]")

    @property
    def function_names(self) -> set[str]:
        return set(self._by_function)

    @property
    def needs_container(self) -> bool:
        return any(isinstance(tool, HostedTool) and tool.uses_container(config) and tool.hosted(config)
                   for tool, config in self.entries)

    @property
    def searches(self) -> bool:
        """Whether the request has a web search tool."""
        return any(isinstance(tool, WebSearchTool) for tool, _config in self.entries)

    @property
    def display_param(self) -> str | None:
        """``tools[i]`` of a hosted computer tool (its container needs a display), else None."""
        return next((f"tools[{index}]" for index, (tool, config) in enumerate(self.entries)
                     if isinstance(tool, ComputerTool) and tool.hosted(config)), None)

    def screen(self) -> Screen | None:
        """The display the computer tool asks for, if the request has one."""
        return next((tool.screen(config) for tool, config in self.entries if isinstance(tool, ComputerTool)), None)

    def released(self, context: list[dict[str, Any]],
                 new_items: list[dict[str, Any]]) -> list[tuple[HostedTool, dict[str, Any], dict[str, Any]]]:
        """Held computer calls the request's input acknowledges (a mismatch is ``InvalidRequest``), with
        the tool that performs them now; none when the computer is the client's (its answer is its own)."""
        pairs = released(context, new_items)
        tool = self.hosted(COMPUTER)
        found: list[tuple[HostedTool, dict[str, Any], dict[str, Any]]] = (
            [(tool, call, answer) for call, answer in pairs] if tool is not None else [])
        servers = {config.server_label: config for config in self.mcp_servers}
        for request, answer, index in approvals(context, list(new_items)):
            config = servers.get(str(request.get("server_label")))
            if config is None:
                where = f"input[{index}]"
                raise InvalidRequest(f"Invalid value for '{where}': the request's tools have no mcp server "
                                     f"labelled {request.get('server_label')!r} to make the approved call.",
                                     param=where, code="invalid_value")
            found.append((McpTool(config, {"name": request.get("name")}), request, answer))
        return found

    def environment(self) -> dict[str, Any]:
        """The container the hosted tools ask for: the first one that names one, else ``container_auto``."""
        for tool, config in self.entries:
            if isinstance(tool, HostedTool) and tool.hosted(config):
                environment = tool.environment(config)
                if environment is not None:
                    return environment
        return {"type": "container_auto"}

    def container_environment(self) -> tuple[int, ContainerAuto | ContainerReference] | None:
        """The environment (and the tool's index) that ``environment`` answers with, parsed: where a
        request's skills for its container are, and where the service marks the container's skills."""
        for index, (tool, config) in enumerate(self.entries):
            if isinstance(tool, HostedTool) and tool.hosted(config) and tool.environment(config) is not None:
                environment = getattr(config, "environment", None)
                return (index, environment) if isinstance(environment, ContainerAuto | ContainerReference) else None
        return None

    def model_tools(self, native: bool = False, hosted: bool = True,
                    upstream_search: bool = False) -> list[dict[str, Any]]:
        """Tool definitions for the upstream: functions, or (``native``) the tools' client-side forms for
        upstreams that speak the Responses API, which then answer with the tools' own call items.
        ``hosted=False`` leaves out the tools this server runs (``max_tool_calls`` is spent).
        ``upstream_search``: a Responses upstream runs web search itself (``COVE_WEB_SEARCH=upstream``)
        and is given the tool as the client gave it."""
        return [offered for tool, config in self.entries if hosted or not tool.hosted(config)
                for offered in (
                    [tool.upstream_form(config)] if upstream_search and isinstance(tool, WebSearchTool)
                    else tool.model_tools(config, native))]

    def hosted(self, name: str) -> HostedTool | None:
        """The tool this server runs for calls of the function ``name``, if any."""
        tool, config = self._by_function.get(name, (None, None))
        if isinstance(tool, HostedTool) and config is not None and tool.hosted(config):
            return tool.bind(config, name)
        return None

    def call_name(self, name: str) -> tuple[str, str | None]:
        """The ``name`` and ``namespace`` a call of the function ``name`` takes in the response (a chat
        model calls a namespace's functions by their flat names)."""
        tool, config = self._by_function.get(name, (None, None))
        return tool.call_name(config, name) if tool is not None and config is not None else (name, None)

    def client_item(self, call_id: str, name: str, arguments: str) -> dict[str, Any] | None:
        """A call the client runs, in its tool's own item shape (None: it stays a ``function_call``)."""
        tool, config = self._by_function.get(name, (None, None))
        if isinstance(tool, CustomTool) and config is not None:
            return tool.custom_call(config, call_id, arguments)
        return tool.client_item(call_id, arguments) if tool is not None else None

    def native_call(self, item: dict[str, Any]) -> HostedTool | None:
        """The server-side tool an upstream's native call item (e.g. ``shell_call``) is for."""
        for tool, config in self.entries:
            if (isinstance(tool, HostedTool) and tool.hosted(config) and tool.native_form is not None
                    and item.get("type") == tool.call_type):
                return tool
        return None

    def for_item(self, item: dict[str, Any]) -> HostedTool | None:
        """The server-side tool whose call ``item`` is (to settle a call a server restart cut off)."""
        for tool, config in self.entries:
            if isinstance(config, McpConfig):  # its calls name the server's tool, not the function
                if item.get("type") == McpTool.call_type and item.get("server_label") == config.server_label:
                    return McpTool(config, {"name": item.get("name")})
                continue
            if isinstance(tool, HostedTool) and tool.hosted(config) and item.get("type") == tool.call_type:
                name = item.get("name")
                if name is None or name in tool.function_names(config):
                    return tool.bind(config, name if isinstance(name, str) else tool.function_name(config))
        return None

    @staticmethod
    def as_model_context(items: list[dict[str, Any]], native: bool = False,
                         upstream_search: bool = False) -> list[dict[str, Any]]:
        """Tool items rewritten as the function calls and outputs a chat upstream understands
        (``native``: kept as they are where the upstream knows the tool, in its client-side form;
        ``upstream_search``: ``web_search_call`` items too, for an upstream that searches itself)."""
        result = []
        functions_only = editor_call_ids(items) if native else set()
        requests = {item.get("id"): item for item in items if item.get("type") == REQUEST_TYPE}
        replaced = superseded(items)
        stale = stale_screenshots(items, replaced)
        for item in items:
            if id(item) in replaced:
                continue
            if not native and "namespace" in item:
                item = flatten_call(item)
            tool = TOOLS.of_item(item.get("type"))
            if tool is None:
                result.append(item)
            elif item.get("type") == ANSWER_TYPE:
                result.extend(McpTool.answer_context(item, requests.get(item.get("approval_request_id"))))
            elif ((native and tool.native_form is not None and item.get("call_id") not in functions_only)
                  or (upstream_search and isinstance(tool, WebSearchTool))):
                result.append(tool.as_native(item))
            elif id(item) in stale and isinstance(tool, ComputerTool):
                result.extend(tool.model_context(item, image=False))
            else:
                result.extend(tool.model_context(item))
        return result

    @staticmethod
    def choice(choice: str | dict[str, Any] | None, native: bool,
               upstream_search: bool = False) -> str | dict[str, Any] | None:
        """A ``tool_choice`` as the upstream is told it: a named tool it knows only as a function, as that."""
        tool = TOOLS.get(choice.get("type")) if isinstance(choice, dict) else None
        if (tool is None or (native and tool.native_form is not None)
                or (upstream_search and isinstance(tool, WebSearchTool))):
            return choice
        assert isinstance(choice, dict)
        return tool.choice(choice)
