"""The ``openai-agents`` SDK runs unchanged against Cove, with only ``base_url`` set."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import openai
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, RunResult, function_tool, set_tracing_disabled

from tests.conftest import KEYS, Server
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root


def test_agent_with_function_tool(server: Server, upstream: ScriptedUpstream) -> None:
    set_tracing_disabled(True)  # the SDK would otherwise export traces to a remote service
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        calls.append(city)
        return f"{city}: 21C and sunny"

    upstream.script([Reply(tool_calls=[ToolCall(name="get_weather", arguments='{"city": "Lyon"}')]),
                     Reply(text="Lyon is sunny at 21C.")])

    async def main() -> str:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEYS["alpha"]) as client:
            agent = Agent(name="weather", instructions="Answer with the weather.", tools=[get_weather],
                          model=OpenAIResponsesModel(model="scripted-model", openai_client=client))
            result = await Runner.run(agent, "What is the weather in Lyon?")
            return str(result.final_output)

    assert asyncio.run(main()) == "Lyon is sunny at 21C."
    assert calls == ["Lyon"]
    tool_message = upstream.requests[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"] == "Lyon: 21C and sunny"


def run_shell_agent(server: Server, question: str) -> RunResult:
    """An agent with the SDK's hosted ``ShellTool`` (container_auto), run once against the server."""
    from agents import ShellTool

    set_tracing_disabled(True)

    async def main() -> RunResult:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEYS["alpha"]) as client:
            agent = Agent(name="shell", instructions="Use the shell.",
                          tools=[ShellTool(environment={"type": "container_auto"})],
                          model=OpenAIResponsesModel(model="scripted-model", openai_client=client))
            return await Runner.run(agent, question)

    return asyncio.run(main())


def test_hosted_shell_tool_in_a_container(server: Server, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall(name="shell", arguments='{"commands": ["echo $((20 + 22))"]}')]),
                     Reply(text="The shell says 42.")])
    result = run_shell_agent(server, "What is 20 + 22?")
    final, kinds = str(result.final_output), [item.type for item in result.new_items]
    assert final == "The shell says 42."
    assert "42" in upstream.requests[-1]["messages"][-1]["content"]
    assert kinds[-1] == "message_output_item", kinds


def test_apply_patch_tool_applies_a_patch_once_with_the_clients_editor(
        server: Server, upstream: ScriptedUpstream, tmp_path: Path) -> None:
    from agents import ApplyPatchTool, apply_diff
    from agents.editor import ApplyPatchOperation, ApplyPatchResult

    set_tracing_disabled(True)
    (tmp_path / "greet.py").write_text("def greet():\n    return 'hello'\n")
    applied: list[tuple[str, str]] = []

    class Editor:
        """Applies operations to ``tmp_path``, as a coding agent's editor does on the user's machine."""

        def create_file(self, operation: ApplyPatchOperation) -> ApplyPatchResult:
            applied.append((operation.type, operation.path))
            (tmp_path / operation.path).write_text(apply_diff("", operation.diff or "", mode="create"))
            return ApplyPatchResult(output=f"Created {operation.path}")

        def update_file(self, operation: ApplyPatchOperation) -> ApplyPatchResult:
            applied.append((operation.type, operation.path))
            target = tmp_path / operation.path
            target.write_text(apply_diff(target.read_text(), operation.diff or ""))
            return ApplyPatchResult(output=f"Updated {operation.path}")

        def delete_file(self, operation: ApplyPatchOperation) -> ApplyPatchResult:
            applied.append((operation.type, operation.path))
            (tmp_path / operation.path).unlink()
            return ApplyPatchResult(output=f"Deleted {operation.path}")

    update = "@@ def greet():\n-    return 'hello'\n+    return 'bonjour'\n"
    upstream.script([Reply(tool_calls=[ToolCall(name="apply_patch", arguments=json.dumps(
                         {"type": "update_file", "path": "greet.py", "diff": update}))]),
                     Reply(text="It says bonjour now.")])

    async def main() -> str:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEYS["alpha"]) as client:
            agent = Agent(name="patcher", instructions="Edit files.", tools=[ApplyPatchTool(editor=Editor())],
                          model=OpenAIResponsesModel(model="scripted-model", openai_client=client))
            result = await Runner.run(agent, "Make greet say bonjour.")
            return str(result.final_output)

    assert asyncio.run(main()) == "It says bonjour now."
    assert applied == [("update_file", "greet.py")]  # exactly once: by the client, not also in a container
    assert (tmp_path / "greet.py").read_text() == "def greet():\n    return 'bonjour'\n"
    tool_message = upstream.requests[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"] == "Updated greet.py"


def test_a_refused_hosted_shell_call_is_a_shell_call_the_sdk_resolves(server: Server,
                                                                       upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall(name="shell", arguments='{"commands": 5}')]),
                     Reply(text="My call was wrong.")])
    result = run_shell_agent(server, "Run something.")
    final = str(result.final_output)
    kinds = [item.type for response in result.raw_responses for item in response.output]
    assert final == "My call was wrong."
    assert kinds == ["shell_call", "shell_call_output", "message"]
    reason = upstream.requests[-1]["messages"][-1]
    assert reason["role"] == "tool" and "`commands` must be" in reason["content"]
