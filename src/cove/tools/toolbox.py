"""The tools of one request: which the server runs, which the client runs, and what the model sees."""

from __future__ import annotations

import json
from typing import Any

from cove.ids import new_id
from cove.tools.apply_patch import ApplyPatchTool
from cove.tools.base import HostedTool
from cove.tools.code_interpreter import CodeInterpreterTool
from cove.tools.shell import ShellTool
from cove.tools.text_editor import TextEditorTool

HOSTED: dict[str, HostedTool] = {
    tool.tool_type: tool for tool in (ShellTool(), CodeInterpreterTool(), ApplyPatchTool(), TextEditorTool())}
"""Hosted tools by their ``type`` in the request."""

_LOCAL_SHELL_FUNCTION = {
    "type": "function", "name": "local_shell",
    "description": "Run a command on the user's machine. Returns its output.",
    "parameters": {"type": "object", "properties": {
        "command": {"type": "array", "items": {"type": "string"}, "description": "argv of the command"},
        "working_directory": {"type": "string"}, "timeout_ms": {"type": "integer"}}, "required": ["command"]}}


def is_server_side(tool: dict[str, Any]) -> bool:
    """A hosted tool runs here unless its environment is the client's (``{"type": "local"}``)."""
    return tool.get("type") in HOSTED and (tool.get("environment") or {}).get("type") != "local"


class Toolbox:
    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.tools = tools
        self.server: dict[str, tuple[HostedTool, dict[str, Any]]] = {}
        """Hosted tools this server runs, by the function name the model calls."""
        self.client_hosted: dict[str, HostedTool] = {}
        """Hosted tool shapes whose calls go back to the client (``environment: local``)."""
        for tool in tools:
            hosted = HOSTED.get(str(tool.get("type")))
            if hosted is not None and is_server_side(tool):
                self.server[hosted.function_name] = (hosted, tool)
            elif hosted is not None:
                self.client_hosted[hosted.function_name] = hosted

    @property
    def needs_container(self) -> bool:
        return bool(self.server)

    def environment(self) -> dict[str, Any]:
        """The first server-side tool's ``environment`` (``container_auto`` when none is given)."""
        for _tool, config in self.server.values():
            environment = config.get("environment") or config.get("container")
            if isinstance(environment, str):  # code_interpreter: "auto" or a container id
                return ({"type": "container_auto"} if environment == "auto" else
                        {"type": "container_reference", "container_id": environment})
            if isinstance(environment, dict):
                return {**environment, "type": "container_auto"} if environment.get("type") == "auto" else environment
        return {"type": "container_auto"}

    def model_tools(self, native: bool = False) -> list[dict[str, Any]]:
        """Tool definitions for the upstream: functions, or (``native``) the tools' client-side forms
        for upstreams that speak the Responses API, which then answer with the tools' own call items."""
        result = []
        for tool in self.tools:
            hosted = HOSTED.get(str(tool.get("type")))
            if hosted is not None and native and hosted.native_form is not None:
                result.append(hosted.native_form)
            elif hosted is not None:
                result.append(hosted.function(tool))
            elif tool.get("type") == "local_shell":
                result.append(_LOCAL_SHELL_FUNCTION)
            else:
                result.append(tool)
        return result

    def hosted(self, name: str) -> HostedTool | None:
        entry = self.server.get(name)
        return entry[0] if entry is not None else None

    def client_item(self, call_id: str, name: str, arguments: str) -> dict[str, Any] | None:
        """A client-run hosted call (local shell) in its own item shape, or None for plain functions."""
        if name == "local_shell" and any(t.get("type") == "local_shell" for t in self.tools):
            args = _loads(arguments)
            action: dict[str, Any] = {"type": "exec", "command": args.get("command") or [], "env": {},
                      "timeout_ms": args.get("timeout_ms"), "working_directory": args.get("working_directory")}
            # id == call_id: clients answer with either as the output's ``id``.
            return {"id": call_id, "type": "local_shell_call", "call_id": call_id, "action": action,
                    "status": "completed"}
        hosted = self.client_hosted.get(name)
        if hosted is not None and hosted.tool_type == "shell":
            args = _loads(arguments)
            return {"id": new_id("sh"), "type": "shell_call", "call_id": call_id, "status": "completed",
                    "action": {"commands": args.get("commands") or [], "timeout_ms": args.get("timeout_ms"),
                               "max_output_length": args.get("max_output_length")},
                    "environment": {"type": "local"}}
        return None

    def native_call(self, item: dict[str, Any]) -> HostedTool | None:
        """The server-side tool an upstream's native call item (e.g. ``shell_call``) is for."""
        for tool, _config in self.server.values():
            if tool.native_form is not None and item.get("type") == tool.call_type:
                return tool
        return None

    def as_model_context(self, items: list[dict[str, Any]], native: bool = False) -> list[dict[str, Any]]:
        """Hosted-tool items rewritten as the function calls and outputs a chat upstream understands
        (``native``: kept as they are where the upstream knows the tool, in its client-side form)."""
        result = []
        for item in items:
            kind = item.get("type")
            native_tool = next((t for t in HOSTED.values() if t.native_form is not None
                                and kind in (t.call_type, t.output_type)), None)
            if native and native_tool is not None:
                result.append(native_tool.as_native(item))
                continue
            tool = next((t for t in HOSTED.values() if kind == t.call_type), None)
            if tool is not None:
                result.append(tool.as_function_call(item))
                if tool.output_type == tool.call_type:  # one item holds the call and its outputs
                    result.append(tool.as_function_output(item))
                continue
            tool = next((t for t in HOSTED.values() if kind == t.output_type), None)
            if tool is not None:
                result.append(tool.as_function_output(item))
            elif kind == "local_shell_call":
                result.append({"type": "function_call", "id": item.get("id", new_id("fc")),
                               "call_id": item["call_id"], "name": "local_shell",
                               "arguments": json.dumps({"command": item.get("action", {}).get("command", [])})})
            elif kind == "local_shell_call_output":
                result.append({"type": "function_call_output", "id": new_id("fco"), "call_id": item["id"],
                               "output": str(item.get("output", ""))})
            else:
                result.append(item)
        return result


def _loads(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
