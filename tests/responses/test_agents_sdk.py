"""The ``openai-agents`` SDK runs unchanged against Cove, with only ``base_url`` set."""

from __future__ import annotations

import asyncio

import openai
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

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


def test_hosted_shell_tool_in_a_container(server: Server, upstream: ScriptedUpstream) -> None:
    from agents import ShellTool

    set_tracing_disabled(True)
    upstream.script([Reply(tool_calls=[ToolCall(name="shell", arguments='{"commands": ["echo $((20 + 22))"]}')]),
                     Reply(text="The shell says 42.")])

    async def main() -> tuple[str, list[str]]:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEYS["alpha"]) as client:
            agent = Agent(name="shell", instructions="Use the shell.",
                          tools=[ShellTool(environment={"type": "container_auto"})],
                          model=OpenAIResponsesModel(model="scripted-model", openai_client=client))
            result = await Runner.run(agent, "What is 20 + 22?")
            kinds = [item.type for item in result.new_items]
            return str(result.final_output), kinds

    final, kinds = asyncio.run(main())
    assert final == "The shell says 42."
    assert "42" in upstream.requests[-1]["messages"][-1]["content"]
    assert kinds[-1] == "message_output_item", kinds
