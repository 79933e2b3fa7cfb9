"""The ``local_shell`` tool: commands the client runs on its own machine (``local_shell_call``), and
whose results it sends back as ``local_shell_call_output``."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from openai.types.responses.tool_param import LocalShell

from cove.ids import new_id
from cove.tools.base import Tool, ToolConfig, parse_arguments

_FUNCTION = {
    "type": "function", "name": "local_shell",
    "description": "Run a command on the user's machine. Returns its output.",
    "parameters": {"type": "object", "properties": {
        "command": {"type": "array", "items": {"type": "string"}, "description": "argv of the command"},
        "working_directory": {"type": "string"}, "timeout_ms": {"type": "integer"}}, "required": ["command"]}}


class LocalShellConfig(ToolConfig):
    type: Literal["local_shell"]


class LocalShellTool(Tool):
    types = ("local_shell",)
    config = LocalShellConfig
    sdk_type: ClassVar[type | None] = LocalShell
    name = "local_shell"
    call_type = "local_shell_call"
    output_type = "local_shell_call_output"

    def function(self, config: ToolConfig) -> dict[str, Any]:
        return _FUNCTION

    def client_item(self, call_id: str, arguments: str) -> dict[str, Any]:
        args = parse_arguments(arguments)
        action: dict[str, Any] = {"type": "exec", "command": args.get("command") or [], "env": {},
                                  "timeout_ms": args.get("timeout_ms"),
                                  "working_directory": args.get("working_directory")}
        # id == call_id: clients answer with either as the output's ``id``.
        return {"id": call_id, "type": self.call_type, "call_id": call_id, "action": action, "status": "completed"}

    def model_context(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        if item.get("type") == self.call_type:
            return [{"type": "function_call", "id": item.get("id", new_id("fc")), "call_id": item["call_id"],
                     "name": self.name,
                     "arguments": json.dumps({"command": item.get("action", {}).get("command", [])})}]
        return [{"type": "function_call_output", "id": new_id("fco"), "call_id": item["id"],
                 "output": str(item.get("output", ""))}]
