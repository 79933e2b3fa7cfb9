"""What clients built on OpenAI's API send beyond the SDK's typed params (Codex's requests are the model
here): ``client_metadata``, ``namespace`` tools, ``developer`` messages, ``prompt_cache_key``,
``reasoning.summary``, ``store: false`` with ``include``, ``custom`` tools; and input an upstream cannot take."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Server
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

MODEL = "scripted-model"
CRM = {"type": "namespace", "name": "crm", "description": "Customer records.",
       "tools": [{"type": "function", "name": "lookup", "description": "Find a customer.", "strict": False,
                  "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}]}
LOOKUP = {"type": "function", "name": "lookup", "description": "Look a word up.", "strict": False,
          "parameters": {"type": "object", "properties": {}}}
OPENING: list[dict[str, Any]] = [{"role": "developer", "content": "You are a coding agent."},
                                 {"role": "developer", "content": [{"type": "input_text", "text": "No skills."}]},
                                 {"role": "user", "content": "find customer 7"}]
CODEX_LIKE: dict[str, Any] = {
    "model": MODEL, "instructions": "Be precise.", "tools": [CRM, LOOKUP], "tool_choice": "auto",
    "parallel_tool_calls": True, "reasoning": {"summary": "auto"}, "store": False,
    "include": ["reasoning.encrypted_content"], "prompt_cache_key": "thread-1",
    "extra_body": {"client_metadata": {"session_id": "s-1", "x-codex-turn-metadata": "{" + "x" * 900 + "}"}}}


def test_a_codex_like_request_reaches_a_chat_upstream_and_the_call_comes_back_namespaced(
        client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall("crm__lookup", '{"id": "7"}')]), Reply(text="Ada Lovelace")])
    first = client.responses.create(input=OPENING, **CODEX_LIKE)  # type: ignore[arg-type]
    assert first.status == "completed"
    call = first.output[0]
    assert call.type == "function_call"
    assert (call.name, call.namespace, call.arguments) == ("lookup", "crm", '{"id": "7"}')
    sent = upstream.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be precise.\n\nYou are a coding agent.\n\nNo skills."}
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["crm__lookup", "lookup"]
    assert sent["prompt_cache_key"] == "thread-1" and "client_metadata" not in sent
    # store: false, so the client sends the whole history back, with its namespaced call.
    history = [*OPENING, call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": call.call_id, "output": "Ada Lovelace, born 1815"}]
    second = client.responses.create(input=history, **CODEX_LIKE)  # type: ignore[arg-type]
    assert second.output_text == "Ada Lovelace"
    messages = upstream.requests[-1]["messages"]
    assert messages[-2]["tool_calls"][0]["function"]["name"] == "crm__lookup"  # the name it was offered
    assert messages[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "Ada Lovelace, born 1815"}


def test_a_responses_upstream_gets_namespaces_and_developer_messages_as_they_are(
        own_server: Server, upstream: ScriptedUpstream) -> None:
    own_server.stop()
    own_server.env["COVE_UPSTREAM_API"] = "responses"
    own_server.start()
    native = {"type": "function_call", "id": "fc_up", "call_id": "call_ns", "name": "lookup", "namespace": "crm",
              "arguments": '{"id": "7"}', "status": "completed"}
    upstream.script([Reply(native_items=[native])])
    response = own_server.client().responses.create(input=OPENING, **CODEX_LIKE)  # type: ignore[arg-type]
    call = response.output[0]
    assert (call.type, call.name, call.namespace) == ("function_call", "lookup", "crm")  # type: ignore[union-attr]
    sent = upstream.requests[-1]
    assert sent["tools"][0] == CRM
    assert [item.get("role") for item in sent["input"]] == ["developer", "developer", "user"]
    assert (sent["prompt_cache_key"], sent["reasoning"]) == ("thread-1", {"summary": "auto"})


def test_an_input_item_a_chat_upstream_cannot_take_is_a_400_naming_it(client: openai.OpenAI,
                                                                        upstream: ScriptedUpstream) -> None:
    # Cove has no image generation tool: a past call of OpenAI's has nothing to map to (MCP items, once
    # the example here, are Cove's own now: tests/responses/test_mcp.py).
    generated = {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": None}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input=[{"role": "user", "content": "hi"}, generated])  # type: ignore[list-item]
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "input[1].type", error
    assert "image_generation_call" in error["message"]
    assert upstream.requests == []  # refused before anything ran


def test_client_metadata_is_a_string_map(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    bad = http.post("/v1/responses", json={"model": MODEL, "input": "hi", "client_metadata": {"turn": 1}})
    assert bad.status_code == 400 and "client_metadata" in bad.json()["error"]["param"]
    good = http.post("/v1/responses", json={"model": MODEL, "input": "hi", "client_metadata": {"turn": "1"}})
    assert good.status_code == 200 and good.json()["status"] == "completed"


def test_a_custom_tool_call_reaches_the_client_as_one_and_its_output_the_chat_model(
        client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    patcher = {"type": "custom", "name": "apply_patch", "description": "Edit files.",
               "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n"
    upstream.script([Reply(tool_calls=[ToolCall("apply_patch", json.dumps({"input": patch}))]), Reply(text="Added.")])
    first = client.responses.create(model=MODEL, input="add a.txt", tools=[patcher])  # type: ignore[list-item]
    call = first.output[0]
    assert call.type == "custom_tool_call" and (call.name, call.input) == ("apply_patch", patch)
    second = client.responses.create(model=MODEL, previous_response_id=first.id, tools=[patcher], input=[  # type: ignore[list-item]
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done: a.txt"}])
    assert second.output_text == "Added."
    messages = upstream.requests[-1]["messages"]
    assert json.loads(messages[-2]["tool_calls"][0]["function"]["arguments"]) == {"input": patch}
    assert messages[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "Done: a.txt"}
