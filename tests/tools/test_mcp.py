"""The ``mcp`` tool's rules without a server: approvals as OpenAI words them, what a listing offers, and
requests refused before anything runs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from cove.agent.request import CreateParams
from cove.errors import InvalidRequest
from cove.tools.mcp import MAX_TOOLS, McpConfig, _usable
from cove.tools.toolbox import Toolbox
from cove.tools.workspace import NoContainer


@pytest.fixture
def fresh_script() -> None:
    """Shadows the package conftest's autouse fixture: these tests need no server or upstream."""


def _config(**more: Any) -> McpConfig:
    return McpConfig.model_validate({"type": "mcp", "server_label": "s", "server_url": "https://a.example/", **more})


READ_ONLY = {"name": "look", "annotations": {"readOnlyHint": True}}
WRITES = {"name": "write"}


def test_approvals() -> None:
    assert _config().needs_approval(WRITES)  # OpenAI's default: always
    assert not _config(require_approval="never").needs_approval(WRITES)
    by_name = _config(require_approval={"always": {"tool_names": ["write"]}})
    assert by_name.needs_approval(WRITES) and not by_name.needs_approval(READ_ONLY)
    never_read_only = _config(require_approval={"never": {"read_only": True}})
    assert not never_read_only.needs_approval(READ_ONLY) and never_read_only.needs_approval(WRITES)


def test_a_listing_offers_allowed_tools_once_each_and_bounded() -> None:
    listed = [WRITES, READ_ONLY, {"name": "write"}, {"name": "wr ite"}, {"name": "wr_ite"}, {"name": 7},
              *({"name": f"t{i}"} for i in range(2 * MAX_TOOLS))]
    kept = _usable(_config(), listed)
    names = [tool["name"] for tool in kept]
    assert names[:3] == ["write", "look", "wr ite"] and "wr_ite" not in names and len(kept) == MAX_TOOLS
    assert all(tool["input_schema"] == {"type": "object", "properties": {}} for tool in kept)
    assert [t["name"] for t in _usable(_config(allowed_tools={"read_only": True}), listed)] == ["look"]
    assert [t["name"] for t in _usable(_config(allowed_tools=["write"]), listed)] == ["write"]


@pytest.mark.parametrize(("tool", "param"), [
    ({"server_label": "a b", "server_url": "https://a.example/"}, "tools[0].server_label"),
    ({"server_label": "a", "connector_id": "connector_gmail"}, "tools[0].connector_id"),
    ({"server_label": "a"}, "tools[0].server_url"),
    ({"server_label": "a", "server_url": "ftp://a.example/"}, "tools[0].server_url"),
    ({"server_label": "a", "server_url": "https://user:pw@a.example/"}, "tools[0].server_url"),
    ({"server_label": "a", "command": []}, "tools[0].command"),
    ({"server_label": "a", "command": ["x"], "authorization": "t"}, "tools[0].headers"),
    ({"server_label": "a", "server_url": "https://a.example/", "headers": {"X": "a\nb"}}, "tools[0].headers"),
])
def test_refused_requests(tool: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        CreateParams(model="m", input="hi", tools=[{"type": "mcp", **tool}]).check()
    assert caught.value.param == param


def test_two_servers_with_one_label_are_refused() -> None:
    tool = {"type": "mcp", "server_label": "a", "server_url": "https://a.example/"}
    with pytest.raises(InvalidRequest):
        CreateParams(model="m", input="hi", tools=[tool, tool]).check()


def test_a_call_a_restart_cut_off_is_settled_as_failed() -> None:
    """``agent/resume.py`` finds the tool of an ``mcp_call`` by its server and closes it with the reason."""
    box = Toolbox([{"type": "mcp", "server_label": "s", "server_url": "https://a.example/"}])
    call = {"id": "mcp_1", "type": "mcp_call", "server_label": "s", "name": "add", "arguments": '{"a": 1}',
            "status": "in_progress"}
    tool = box.for_item(call)
    assert tool is not None and box.for_item({**call, "server_label": "other"}) is None
    failed, same = asyncio.run(tool.refused("", json.dumps(tool.function_arguments(call)), "restarted", NoContainer()))
    assert failed is same and failed["status"] == "failed" and failed["name"] == "add"
    assert json.loads(failed["arguments"]) == {"a": 1} and "restarted" in tool.output_text(failed)
