"""``custom`` tools: the client's free-form tools (Codex's ``apply_patch`` for newer models is one). The
model writes plain text (``input``), optionally matching a grammar, and the client runs it.

A Responses upstream gets the tool as it is and answers with ``custom_tool_call`` items. A chat model
knows only functions, so it is offered a function of one string argument, ``input`` (the grammar, if
any, in its description), and its call reaches the client as a ``custom_tool_call``; in later turns
the client's ``custom_tool_call`` and ``custom_tool_call_output`` items read back as that function's
call and result.

The hosted text editor's items are ``custom_tool_call``s too (``text_editor.py``), whose ``input`` is
the editor's JSON arguments; they read back as the editor's function call.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from openai.types.responses import CustomToolParam
from pydantic import Field

from cove.ids import new_id
from cove.tools.base import Tool, ToolConfig, parse_arguments
from cove.tools.function import check_function_name
from cove.tools.text_editor import NAME as EDITOR

INPUT = "input"


def editor_call_ids(items: list[dict[str, Any]]) -> set[str]:
    """The call ids of the hosted editor's items among ``items``: a Responses upstream knows the editor
    only as a function, so its calls and outputs read back as one even there."""
    return {str(item.get("call_id")) for item in items
            if item.get("type") == "custom_tool_call" and item.get("name") == EDITOR}


class CustomConfig(ToolConfig):
    type: Literal["custom"]
    name: str
    description: str | None = None
    format: dict[str, Any] | None = None
    defer_loading: bool | None = None
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None
    async_: bool | None = Field(default=None, alias="async")


class CustomTool(Tool):
    types = ("custom",)
    config = CustomConfig
    sdk_type: ClassVar[type | None] = CustomToolParam
    name = ""
    call_type = "custom_tool_call"
    output_type = "custom_tool_call_output"
    native_form: ClassVar[dict[str, Any] | None] = {"type": "custom"}
    """A Responses upstream knows custom tools: it is offered each as the client wrote it (``model_tools``)."""

    def function_name(self, config: ToolConfig) -> str:
        assert isinstance(config, CustomConfig)
        return config.name

    def function(self, config: ToolConfig) -> dict[str, Any]:
        assert isinstance(config, CustomConfig)
        fmt = config.format or {}
        described = config.description or ""
        if fmt.get("type") == "grammar":
            described += (f"\n\nThe input must match this {fmt.get('syntax', '')} grammar; write it as is, not "
                          f"as JSON:\n{fmt.get('definition', '')}")
        text = {"type": "string", "description": "The tool's input, as plain text."}
        return {"type": "function", "name": config.name, "description": described.strip(),
                "parameters": {"type": "object", "properties": {INPUT: text}, "required": [INPUT]}}

    def model_tools(self, config: ToolConfig, native: bool) -> list[dict[str, Any]]:
        return [config.model_dump(exclude_unset=True, by_alias=True) if native else self.function(config)]

    def check(self, config: ToolConfig, param: str) -> None:
        assert isinstance(config, CustomConfig)
        check_function_name(config.name, f"{param}.name")

    def choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        return {"type": "function", "name": choice.get("name")}

    def custom_call(self, config: ToolConfig, call_id: str, arguments: str) -> dict[str, Any]:
        """A chat model's call of the tool's function, as the client's ``custom_tool_call``."""
        assert isinstance(config, CustomConfig)
        text = parse_arguments(arguments).get(INPUT)
        return {"id": new_id("ctc"), "type": self.call_type, "call_id": call_id, "name": config.name,
                "input": text if isinstance(text, str) else arguments, "status": "completed"}

    def model_context(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        if item.get("type") == self.output_type:
            output = item.get("output")
            return [{"type": "function_call_output", "id": item.get("id", new_id("fco")), "call_id": item["call_id"],
                     "output": output if isinstance(output, (str, list)) else json.dumps(output)}]
        name, text = str(item.get("name", "")), str(item.get("input", ""))
        arguments = json.dumps(parse_arguments(text)) if name == EDITOR else json.dumps({INPUT: text})
        return [{"type": "function_call", "id": item.get("id", new_id("fc")), "call_id": item["call_id"],
                 "name": name, "arguments": arguments}]
