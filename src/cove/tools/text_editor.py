"""The hosted text editor (``{"type": "text_editor_20250429"}``), with Anthropic's semantics.

OpenAI's SDK has no item type for it, so its calls and results appear in ``output`` as the SDK's
custom tool items: a ``custom_tool_call`` named ``str_replace_based_edit_tool`` whose ``input`` is
the command as JSON, then a ``custom_tool_call_output`` holding the editor's answer (errors start
with ``Error:``). In a chained request the client sends them back unchanged.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from cove.ids import new_id
from cove.tools.base import HostedTool, ToolArgumentsError, ToolConfig, ToolRun, parse_arguments
from cove.tools.editor_commands import EditorError, run_command
from cove.tools.workspace import Workspace

NAME = "str_replace_based_edit_tool"
_DESCRIPTION = (
    "View and edit files in the Linux container. Commands: view (a file with line numbers, or a "
    "directory; optional view_range [start, end]), create (path, file_text), str_replace (path, "
    "old_str that occurs exactly once, new_str), insert (path, insert_line, new_str).")


class TextEditorConfig(ToolConfig):
    """Anthropic's tool definition (Cove's extension: the ``openai`` SDK has no type for it)."""

    type: Literal["text_editor_20250429"]
    name: Literal["str_replace_based_edit_tool"] | None = None


class TextEditorTool(HostedTool):
    types = ("text_editor_20250429",)
    config = TextEditorConfig
    name = NAME
    call_type = "custom_tool_call"
    output_type = "custom_tool_call_output"
    owns_items = False  # custom tool items, which the custom tool reads back (the editor's as its function)

    def function(self, config: ToolConfig) -> dict[str, Any]:
        return {"type": "function", "name": self.name, "description": _DESCRIPTION, "parameters": {
            "type": "object", "properties": {
                "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert"]},
                "path": {"type": "string"}, "file_text": {"type": "string"}, "old_str": {"type": "string"},
                "new_str": {"type": "string"}, "insert_line": {"type": "integer"},
                "view_range": {"type": "array", "items": {"type": "integer"}}},
            "required": ["command", "path"]}}

    async def call_item(self, call_id: str, arguments: dict[str, Any], workspace: Workspace) -> dict[str, Any]:
        if not isinstance(arguments.get("command"), str) or not isinstance(arguments.get("path"), str):
            raise ToolArgumentsError("`command` and `path` are required strings.")
        await workspace.container_id()
        return {"id": new_id("ctc"), "type": self.call_type, "call_id": call_id, "name": NAME,
                "input": json.dumps(arguments), "status": "completed"}

    async def refused(self, call_id: str, arguments: str, message: str,
                      workspace: Workspace) -> tuple[dict[str, Any], dict[str, Any]]:
        call = {"id": new_id("ctc"), "type": self.call_type, "call_id": call_id, "name": NAME, "input": arguments,
                "status": "completed"}
        output = {"id": new_id("cto"), "type": self.output_type, "call_id": call_id, "output": f"Error: {message}",
                  "status": "completed"}
        return call, output

    async def run(self, call: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        try:
            text = await run_command(run.workspace, json.loads(call["input"]))
        except EditorError as exc:
            text = f"Error: {exc}"
        output = {"id": new_id("cto"), "type": self.output_type, "call_id": call["call_id"], "output": text,
                  "status": "completed"}
        await run.events.item(output)
        return output

    def function_arguments(self, call: dict[str, Any]) -> dict[str, Any]:
        return parse_arguments(call.get("input") or "")

    def output_text(self, output: dict[str, Any]) -> str:
        return str(output.get("output") or "")
