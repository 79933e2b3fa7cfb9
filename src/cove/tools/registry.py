"""Every tool type Cove knows, in one place. Request validation, the agent loop, the upstreams' view of
tools, project rules and the docs' tool table all draw from here.

To add a tool: write its module (a ``Tool`` or ``HostedTool`` subclass with its schema; see
``docs/tools.md``) and add it to ``TOOLS`` below.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError

from cove.errors import InvalidRequest
from cove.tools.apply_patch import ApplyPatchTool
from cove.tools.base import Tool, ToolConfig
from cove.tools.code_interpreter import CodeInterpreterTool
from cove.tools.computer import ComputerTool, ComputerUsePreviewTool
from cove.tools.custom import CustomTool
from cove.tools.function import FunctionTool
from cove.tools.local_shell import LocalShellTool
from cove.tools.mcp import McpTool
from cove.tools.namespace import NamespaceTool
from cove.tools.shell import ShellTool
from cove.tools.text_editor import TextEditorTool
from cove.tools.web_search import WebSearchPreviewTool, WebSearchTool


class Registry:
    def __init__(self, tools: Iterable[Tool]) -> None:
        self.tools = tuple(tools)
        self._by_type: dict[str, Tool] = {}
        self._by_item: dict[str, Tool] = {}
        for tool in self.tools:
            for name in tool.types:
                if name in self._by_type:
                    raise ValueError(f"two tools answer to the type {name!r}")
                self._by_type[name] = tool
            own = (tool.call_type, tool.output_type, *tool.other_items) if tool.owns_items else ()
            for item_type in dict.fromkeys(own):
                if item_type in self._by_item:
                    raise ValueError(f"two tools make {item_type!r} items")
                self._by_item[item_type] = tool

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._by_type)

    def get(self, tool_type: object) -> Tool | None:
        return self._by_type.get(tool_type) if isinstance(tool_type, str) else None

    def of_item(self, item_type: object) -> Tool | None:
        """The tool whose calls or outputs have this item type (``shell_call`` -> the shell tool)."""
        return self._by_item.get(item_type) if isinstance(item_type, str) else None

    def parse(self, index: int, raw: object) -> tuple[Tool, ToolConfig]:
        """One entry of a request's ``tools``, checked against its tool's schema (not its ``check``)."""
        param = f"tools[{index}]"
        kind = raw.get("type") if isinstance(raw, dict) else None
        tool = self.get(kind)
        if tool is None:
            raise InvalidRequest(f"Tool type {kind!r} is not supported by this server.", param=f"{param}.type",
                                 code="invalid_value")
        try:
            return tool, tool.config.model_validate(raw)
        except ValidationError as exc:
            raise _invalid(exc, raw, param) from None


def _invalid(exc: ValidationError, raw: object, param: str) -> InvalidRequest:
    """The first schema error, worded as OpenAI words it and naming the field."""
    first = exc.errors()[0]
    kind = first["type"]
    where = param + "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                            for part in _input_path(raw, first["loc"], kind))
    if kind == "extra_forbidden":
        return InvalidRequest(f"Unknown parameter: '{where}'.", param=where, code="unknown_parameter")
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{where}'.", param=where,
                              code="missing_required_parameter")
    return InvalidRequest(f"Invalid value for '{where}': {first['msg']}.", param=where, code="invalid_value")


_ABSENT = object()


def _child(node: object, key: int | str) -> object:
    if isinstance(node, dict):
        return node.get(key, _ABSENT)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return _ABSENT


def _input_path(raw: object, loc: tuple[int | str, ...], kind: str) -> list[int | str]:
    """An error's location as a path in the request: pydantic also names union members (``str``, a
    discriminator's value), which are not there."""
    path: list[int | str] = []
    node = raw
    for position, part in enumerate(loc):
        child = _child(node, part)
        if child is not _ABSENT:
            node = child
        elif kind != "missing" or position != len(loc) - 1:
            continue  # a union member's name
        path.append(part)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        path.append("type")
    return path


TOOLS = Registry([
    FunctionTool(),
    NamespaceTool(),
    CustomTool(),
    LocalShellTool(),
    ShellTool(),
    ApplyPatchTool(),
    TextEditorTool(),
    CodeInterpreterTool(),
    ComputerUsePreviewTool(),
    ComputerTool(),
    WebSearchTool(),
    WebSearchPreviewTool(),
    McpTool(),
])
