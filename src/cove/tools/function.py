"""Function tools: the client's own functions. The model's call ends the response; the client runs
it and continues the chain with a ``function_call_output``."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from openai.types.responses import FunctionToolParam
from pydantic import Field

from cove.errors import InvalidRequest
from cove.tools.base import Tool, ToolConfig

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class FunctionConfig(ToolConfig):
    type: Literal["function"]
    name: str
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None
    defer_loading: bool | None = None
    output_schema: dict[str, Any] | None = None
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None
    async_: bool | None = Field(default=None, alias="async")


class FunctionTool(Tool):
    types = ("function",)
    config = FunctionConfig
    sdk_type: ClassVar[type | None] = FunctionToolParam
    name = ""
    call_type = "function_call"
    output_type = "function_call_output"

    def function_name(self, config: ToolConfig) -> str:
        assert isinstance(config, FunctionConfig)
        return config.name

    def function(self, config: ToolConfig) -> dict[str, Any]:
        return config.model_dump(exclude_unset=True, by_alias=True)  # as the client wrote it

    def check(self, config: ToolConfig, param: str) -> None:
        assert isinstance(config, FunctionConfig)
        check_function_name(config.name, f"{param}.name")

    def choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        return choice

    def model_context(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        return [item]


def check_function_name(name: str, param: str) -> None:
    """OpenAI's rule for function (and namespace) names, which chat servers share."""
    if not _NAME.match(name):
        raise InvalidRequest("Function names must be 1-64 characters of a-z, A-Z, 0-9, _ and -.",
                             param=param, code="invalid_value")
