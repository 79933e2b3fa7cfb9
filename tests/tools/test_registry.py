"""The registry of tool types: schemas in step with the ``openai`` SDK, refusals that name the field,
and a docs table that lists every tool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cove.agent.request import CreateParams
from cove.errors import CoveError
from cove.tools.base import Tool
from cove.tools.registry import TOOLS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tools.md"


@pytest.fixture
def fresh_script() -> None:
    """Shadows the package conftest's autouse fixture: these tests need no server or upstream."""


@pytest.mark.parametrize("tool", [tool for tool in TOOLS.tools if tool.sdk_type is not None],
                         ids=lambda tool: tool.types[0])
def test_each_schema_has_exactly_the_fields_of_the_sdk_type(tool: Tool) -> None:
    assert tool.sdk_type is not None
    ours = {field.alias or name for name, field in tool.config.model_fields.items()}
    assert ours == set(tool.sdk_type.__annotations__) | set(tool.extensions)
    assert not set(tool.extensions) & set(tool.sdk_type.__annotations__)  # an extension is not the SDK's field
    for field in tool.extensions:  # each extension is documented in the tool's row of the table
        assert f'{{"type": "{tool.types[0]}", "{field}"' in DOCS.read_text(), field


def test_the_docs_table_lists_every_tool() -> None:
    table = DOCS.read_text()
    for tool in TOOLS.tools:
        assert f'"type": "{tool.types[0]}"' in table, tool.types[0]
        assert tool.name == "" or f"`{tool.name}" in table, tool.name


def refusal(tools: list[dict[str, Any]], **params: Any) -> CoveError:
    with pytest.raises(CoveError) as info:
        CreateParams.model_validate({"model": "m", "input": "x", "tools": tools, **params}).check()
    return info.value


@pytest.mark.parametrize(("tools", "param", "code"), [
    ([{"type": "web_search_preview_2099"}], "tools[0].type", "invalid_value"),
    ([{"type": "function", "name": "f"}, {"type": "shell", "environment": {"type": "container_auto", "x": 1}}],
     "tools[1].environment.x", "unknown_parameter"),
    ([{"type": "shell", "environment": {"type": "container"}}], "tools[0].environment.type", "invalid_value"),
    ([{"type": "shell", "environment": {"type": "container_reference"}}], "tools[0].environment.container_id",
     "missing_required_parameter"),
    ([{"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "3g"}}],
     "tools[0].container.memory_limit", "invalid_value"),
    ([{"type": "apply_patch", "container": {"type": "auto", "memory_limit": "3g"}}],
     "tools[0].container.memory_limit", "invalid_value"),
    ([{"type": "function", "name": "has space"}], "tools[0].name", "invalid_value"),
    ([{"type": "function", "name": "shell"}, {"type": "shell"}], "tools[1]", "duplicate_tool_name"),
    ([{"type": "custom", "name": "apply patch"}], "tools[0].name", "invalid_value"),
    ([{"type": "custom", "name": "p", "format": "lark"}], "tools[0].format", "invalid_value"),
    ([{"type": "namespace", "name": "crm", "description": "d", "tools": [{"type": "custom", "name": "c"}]}],
     "tools[0].tools[0].type", "invalid_value"),
    ([{"type": "namespace", "name": "c rm", "description": "d", "tools": [{"type": "function", "name": "f"}]}],
     "tools[0].name", "invalid_value"),
    ([{"type": "namespace", "name": "crm", "tools": [{"type": "function", "name": "f"}]}],
     "tools[0].description", "missing_required_parameter"),
    ([{"type": "function", "name": "crm__f"},
      {"type": "namespace", "name": "crm", "description": "d", "tools": [{"type": "function", "name": "f"}]}],
     "tools[1]", "duplicate_tool_name"),
    ([{"type": "shell", "environment": {"type": "container_auto",
                                        "network_policy": {"type": "allowlist", "allowed_domains": ["10.0.0.1"]}}}],
     "tools[0].environment.network_policy.allowed_domains[0]", None),
])
def test_bad_tools_are_refused_naming_the_field(tools: list[dict[str, Any]], param: str, code: str | None) -> None:
    error = refusal(tools)
    assert (error.status_code, error.param) == (400, param), error.message
    assert code is None or error.code == code


def test_a_tool_choice_must_name_a_function_the_request_has() -> None:
    assert refusal([], tool_choice={"type": "function", "name": "nope"}).param == "tool_choice"
    CreateParams.model_validate({"model": "m", "tools": [{"type": "function", "name": "a"}],
                                 "tool_choice": {"type": "function", "name": "a"}}).check()
