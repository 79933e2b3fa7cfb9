"""The tool docs/tools.md shows how to add works as written: its module, registered, runs in the loop."""

from __future__ import annotations

import asyncio
import re
import sys
import types
from pathlib import Path

import pytest

from cove.agent.request import CreateParams
from cove.sandbox.base import Command, CommandOutput, ExitOutcome
from cove.testing import Call, MemorySandbox, MemoryWorkspace, Reply, ScriptedModel, run_turns
from cove.tools import toolbox
from cove.tools.registry import TOOLS, Registry

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tools.md"


@pytest.fixture
def fresh_script() -> None:
    """Shadows the package conftest's autouse fixture: these tests need no server or upstream."""


def test_the_documented_example_tool_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    section = DOCS.read_text().split("## Adding a tool", 1)[1]
    source = re.search(r"```python\n(.*?)```", section, re.S)
    assert source is not None
    module = types.ModuleType("disk_usage")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # where pydantic resolves its annotations
    exec(compile(source.group(1), "disk_usage.py", "exec"), module.__dict__)
    monkeypatch.setattr(toolbox, "TOOLS", Registry([*TOOLS.tools, module.DiskUsageTool()]))

    def du(command: Command) -> CommandOutput:
        assert command.command == "du -sh -- '/data dir'"
        return CommandOutput(stdout="12K\t/data dir\n", stderr="", outcome=ExitOutcome(exit_code=0))

    model = ScriptedModel([Reply(calls=[Call("disk_usage", {"path": "/data dir"})]), Reply(text="12K.")])
    params = CreateParams.model_validate({"model": "m", "input": "how big?", "tools": [{"type": "disk_usage"}]})
    response, _ = asyncio.run(run_turns(model, params, MemoryWorkspace(MemorySandbox(run=du))))
    assert [item["type"] for item in response["output"]] == ["disk_usage_call", "disk_usage_call_output", "message"]
    assert response["output"][1]["output"] == "12K\t/data dir\n"
    assert model.requests[0].tools[0]["name"] == "disk_usage"
    replayed = model.requests[1].input[-2:]
    assert [item["type"] for item in replayed] == ["function_call", "function_call_output"]
    assert replayed[0]["arguments"] == '{"path": "/data dir"}'
