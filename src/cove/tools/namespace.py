"""``namespace`` tools: a named group of the client's functions (Codex sends its sub-agent tools so).

A Responses upstream gets the namespace as it is and answers with ``function_call`` items that carry
``namespace``. A chat model knows only flat functions, so each function is offered as
``<namespace>__<name>`` (``flat_name``); its calls come back to the client in the namespace's own
shape (``name`` and ``namespace``), and in later turns the client's namespaced calls are flattened
again, so the chat model always reads the names it was offered.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Literal

from openai.types.responses import NamespaceToolParam
from pydantic import Field

from cove.errors import InvalidRequest
from cove.tools.base import Tool, ToolConfig
from cove.tools.function import FunctionConfig, check_function_name

SEPARATOR = "__"
_MAX_NAME = 64
"""The longest function name OpenAI-compatible chat servers accept."""
_HASH = 8


class NamespaceConfig(ToolConfig):
    type: Literal["namespace"]
    name: str
    description: str
    tools: list[FunctionConfig] = Field(min_length=1)


def flat_name(namespace: str, name: str) -> str:
    """The function a chat model is offered for ``name`` in ``namespace``: ``<namespace>__<name>``, or,
    past 64 characters, its head and a hash of both (the pair is found again by lookup, never parsed)."""
    joined = f"{namespace}{SEPARATOR}{name}"
    if len(joined) <= _MAX_NAME:
        return joined
    digest = hashlib.sha256(f"{namespace}\0{name}".encode()).hexdigest()[:_HASH]
    return f"{joined[:_MAX_NAME - _HASH - 1]}_{digest}"


def flatten_call(item: dict[str, Any]) -> dict[str, Any]:
    """A namespaced ``function_call`` as a chat model was offered it (outputs lose name and namespace,
    which chat does not know)."""
    namespace = item.get("namespace")
    rest = {key: value for key, value in item.items() if key != "namespace"}
    if item.get("type") == "function_call" and isinstance(namespace, str):
        return {**rest, "name": flat_name(namespace, str(item.get("name", "")))}
    return rest


class NamespaceTool(Tool):
    types = ("namespace",)
    config = NamespaceConfig
    sdk_type: ClassVar[type | None] = NamespaceToolParam
    name = ""
    call_type = "function_call"
    output_type = "function_call_output"
    owns_items = False  # its calls are function calls, which the function tool reads back

    def function_names(self, config: ToolConfig) -> list[str]:
        assert isinstance(config, NamespaceConfig)
        return [flat_name(config.name, function.name) for function in config.tools]

    def function(self, config: ToolConfig) -> dict[str, Any]:
        raise TypeError("a namespace is offered as its functions (model_tools), never as one")

    def model_tools(self, config: ToolConfig, native: bool) -> list[dict[str, Any]]:
        assert isinstance(config, NamespaceConfig)
        if native:
            return [config.model_dump(exclude_unset=True, by_alias=True)]  # as the client wrote it
        flat = []
        for function in config.tools:
            offered = function.model_dump(exclude_unset=True, by_alias=True)
            description = f"[{config.name}: {config.description}] {function.description or ''}".strip()
            flat.append({**offered, "name": flat_name(config.name, function.name), "description": description})
        return flat

    def call_name(self, config: ToolConfig, flat: str) -> tuple[str, str | None]:
        assert isinstance(config, NamespaceConfig)
        for function in config.tools:
            if flat_name(config.name, function.name) == flat:
                return function.name, config.name
        return flat, None

    def check(self, config: ToolConfig, param: str) -> None:
        assert isinstance(config, NamespaceConfig)
        check_function_name(config.name, f"{param}.name")
        for index, function in enumerate(config.tools):
            check_function_name(function.name, f"{param}.tools[{index}].name")
        if not config.description:
            raise InvalidRequest("A namespace needs a description.", param=f"{param}.description",
                                 code="invalid_value")

    def model_context(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        return [flatten_call(item)]
