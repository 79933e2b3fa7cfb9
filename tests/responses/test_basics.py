"""``POST /v1/responses`` and friends through the official SDK, against a scripted upstream."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from openai.types.responses import Response

from tests.conftest import Server
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

MODEL = "scripted-model"


def test_plain_response_has_every_field(client: openai.OpenAI, upstream: ScriptedUpstream, http: httpx.Client) -> None:
    upstream.script([Reply(text="Hello there, traveller.")])
    response = client.responses.create(model=MODEL, input="Say hello", instructions="Be brief.",
                                       metadata={"run": "1"})
    assert response.status == "completed"
    assert response.output_text == "Hello there, traveller."
    assert response.id.startswith("resp_")
    assert response.usage is not None and response.usage.total_tokens > 0
    raw = http.get(f"/v1/responses/{response.id}").json()
    assert set(Response.model_fields) <= set(raw), set(Response.model_fields) - set(raw)
    assert isinstance(raw["created_at"], int) and isinstance(raw["completed_at"], int)
    assert raw["created_at"] <= raw["completed_at"]
    assert (raw["temperature"], raw["top_p"], raw["presence_penalty"], raw["frequency_penalty"],
            raw["top_logprobs"]) == (1, 1, 0, 0, 0)
    assert Response.model_validate(raw).output_text == "Hello there, traveller."
    sent = upstream.requests[-1]
    assert sent["model"] == MODEL
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][-1]["content"] == "Say hello"


def test_retrieve_delete_and_input_items(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input=[
        {"role": "user", "content": f"message {i}"} for i in range(5)])
    fetched = client.responses.retrieve(response.id)
    assert fetched.output_text == response.output_text
    items = client.responses.input_items.list(response.id, order="asc", limit=2)
    assert [item.content[0].text for item in items.data] == ["message 0", "message 1"]  # type: ignore[union-attr]
    assert items.has_more
    everything = [i.content[0].text for i in client.responses.input_items.list(response.id, order="asc")]  # type: ignore[union-attr]
    assert everything == [f"message {i}" for i in range(5)]
    newest_first = client.responses.input_items.list(response.id)
    assert newest_first.data[0].content[0].text == "message 4"  # type: ignore[union-attr]
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_chain_of_fifty(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    previous = None
    for turn in range(50):
        upstream.script([Reply(text=f"answer {turn}")])
        response = client.responses.create(model=MODEL, input=f"question {turn}", previous_response_id=previous,
                                           instructions=f"instructions {turn}")
        assert response.output_text == f"answer {turn}"
        previous = response.id
    messages = upstream.requests[-1]["messages"]
    assert messages[0] == {"role": "system", "content": "instructions 49"}
    conversation = [(m["role"], m["content"]) for m in messages[1:]]
    expected = []
    for turn in range(50):
        expected.append(("user", f"question {turn}"))
        if turn < 49:
            expected.append(("assistant", f"answer {turn}"))
    assert conversation == expected
    assert all("instructions 48" not in str(m) for m in messages)


def test_function_call_round_trip(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    tools = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                             "required": ["city"]}}]
    upstream.script([Reply(tool_calls=[ToolCall(name="get_weather", arguments='{"city": "Paris"}', id="call_1")]),
                     Reply(text="It is sunny in Paris.")])
    first = client.responses.create(model=MODEL, input="Weather in Paris?", tools=tools)  # type: ignore[arg-type]
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}
    assert calls[0].call_id == "call_1"
    assert upstream.requests[-1]["tools"][0]["function"]["name"] == "get_weather"
    second = client.responses.create(model=MODEL, previous_response_id=first.id, tools=tools,  # type: ignore[arg-type]
                                     input=[{"type": "function_call_output", "call_id": "call_1",
                                             "output": '{"sky": "sunny"}'}])
    assert second.output_text == "It is sunny in Paris."
    messages = upstream.requests[-1]["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == "call_1"
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'}


def test_tool_choice_and_parallel_calls(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    tools = [{"type": "function", "name": n, "parameters": {"type": "object", "properties": {}}}
             for n in ("a", "b")]
    upstream.script([Reply(tool_calls=[ToolCall(name="a"), ToolCall(name="b")])])
    response = client.responses.create(model=MODEL, input="both", tools=tools,  # type: ignore[arg-type]
                                       tool_choice={"type": "function", "name": "a"}, parallel_tool_calls=True)
    assert [i.name for i in response.output if i.type == "function_call"] == ["a", "b"]
    sent = upstream.requests[-1]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "a"}}
    assert sent["parallel_tool_calls"] is True


def test_max_output_tokens_makes_it_incomplete(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="A long story that", finish_reason="length")])
    response = client.responses.create(model=MODEL, input="tell me a story", max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "A long story that"


def test_json_schema_format_reaches_the_upstream(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    upstream.script([Reply(text='{"n": 3}')])
    response = client.responses.create(model=MODEL, input="a number", text={"format": {
        "type": "json_schema", "name": "number", "schema": schema, "strict": True}})
    assert json.loads(response.output_text) == {"n": 3}
    assert upstream.requests[-1]["response_format"]["json_schema"]["schema"] == schema


def test_store_false_cannot_be_retrieved(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="forget me", store=False)
    assert response.status == "completed"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=MODEL, input="again", previous_response_id=response.id)
    assert info.value.body["code"] == "previous_response_not_found"  # type: ignore[index]


def test_errors_name_their_param(client: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=MODEL, input="x", previous_response_id="resp_missing")
    assert info.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]
    cases = [
        ({"model": MODEL, "input": "x", "temperature": 5}, "temperature"),
        ({"model": MODEL, "input": "x", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"model": MODEL, "input": "x", "tools": [], "tool_choice": {"type": "function", "name": "nope"}},
         "tool_choice"),
        ({"model": MODEL, "input": "x", "conversation": "conv_x", "previous_response_id": "resp_x"},
         "previous_response_id"),
        ({"model": MODEL, "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": MODEL, "input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
        ({"input": "x"}, "model"),
        ({"model": MODEL, "input": "x", "frobnicate": True}, "frobnicate"),
        ({"model": MODEL, "input": "x", "include": ["everything"]}, "include"),
        ({"model": MODEL, "input": "x", "background": True, "store": False}, "store"),
    ]
    for body, param in cases:
        response = http.post("/v1/responses", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["param"] == param, (body, error)
        assert error["type"] == "invalid_request_error"
    response = http.post("/v1/responses", content=b'{"model": ', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def test_projects_are_isolated(server: Server) -> None:
    alpha, beta = server.client("alpha"), server.client("beta")
    response = alpha.responses.create(model=MODEL, input="mine")
    conversation = alpha.conversations.create()
    with pytest.raises(openai.NotFoundError):
        beta.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        beta.responses.create(model=MODEL, input="x", previous_response_id=response.id)
    with pytest.raises(openai.NotFoundError):
        beta.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        beta.responses.create(model=MODEL, input="x", conversation=conversation.id)
    with pytest.raises(openai.NotFoundError):
        beta.responses.delete(response.id)
    assert alpha.responses.retrieve(response.id).id == response.id


def test_input_tokens_and_models(client: openai.OpenAI) -> None:
    counted = client.responses.input_tokens.count(model=MODEL, input="count these words please")
    assert counted.input_tokens > 0
    longer = client.responses.input_tokens.count(model=MODEL, input="count these words please " * 50)
    assert longer.input_tokens > counted.input_tokens
    assert counted.object == "response.input_tokens"
    # The SDK's own params: model may be left out; instructions and tools count; unknown fields are refused.
    modelless = client.responses.input_tokens.count(input="count these words please")
    assert modelless.input_tokens > 0
    tool = {"type": "function", "name": "lookup", "description": "Looks a word up in the dictionary " * 10,
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}
    fuller = client.responses.input_tokens.count(model=MODEL, input="count these words please",
                                                 instructions="Answer in French. " * 20, tools=[tool],  # type: ignore[list-item]
                                                 tool_choice="auto", parallel_tool_calls=False, truncation="auto")
    assert fuller.input_tokens > counted.input_tokens
    with pytest.raises(openai.BadRequestError):
        client.responses.input_tokens.count(model=MODEL, input="x", extra_body={"temperature": 0.5})
    earlier = client.responses.create(model=MODEL, input="an earlier question " * 30)
    chained = client.responses.input_tokens.count(input="count these words please", previous_response_id=earlier.id)
    assert chained.input_tokens > counted.input_tokens + 30
    assert MODEL in [m.id for m in client.models.list()]


def test_truncation(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    huge = "word " * 40_000
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=[{"role": "user", "content": huge},
                                                    {"role": "user", "content": "short"}])
    assert info.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    response = client.responses.create(model=MODEL, truncation="auto", input=[
        {"role": "user", "content": huge}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "short"}])
    assert response.status == "completed"
    assert [m["content"] for m in upstream.requests[-1]["messages"]] == ["short"]


def test_async_client(server: Server, upstream: ScriptedUpstream) -> None:
    async def main() -> None:
        upstream.script([Reply(text="async hello")])
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="test-key-alpha",
                                      max_retries=0) as aclient:
            response = await aclient.responses.create(model=MODEL, input="hi")
            assert response.output_text == "async hello"
            upstream.script([Reply(text="streamed async")])
            async with aclient.responses.stream(model=MODEL, input="hi") as stream:
                final = await stream.get_final_response()
            assert final.output_text == "streamed async"

    asyncio.run(main())
