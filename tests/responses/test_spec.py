"""Every object and event Cove emits, checked against the ``openai`` SDK's types and the Open
Responses specification (``tests/wire_shapes.py`` says which checks what).

Scenarios between them make Cove emit each kind of item and event it can: text (plain and streamed),
function calls, reasoning text and summaries, refusals, logprobs, incomplete, failed and cancelled
responses, background responses retrieved and streamed again, input and conversation items,
deletion, client-side tool calls, hosted shell, apply_patch, text editor and code interpreter calls
(and a refused one), hosted web search with url citations (and the upstream's own), compaction,
WebSocket mode, over a Chat Completions upstream and over a Responses upstream.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server, _server_env, data_dir, running_server
from tests.internet import Internet
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall
from tests.searx import PANDAS, searx_instance, write_pages
from tests.wire_shapes import (
    compacted_errors,
    event_errors,
    input_item_errors,
    response_errors,
    schema_path,
    spec_available,
)

MODEL = "scripted-model"
WEATHER = {"type": "function", "name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
    "additionalProperties": False}}
SHELL = {"type": "shell", "environment": {"type": "container_auto"}}


pytestmark = pytest.mark.root  # every test here runs a server, and a server runs the container engine


@pytest.fixture(scope="module")
def responses_server(upstream: ScriptedUpstream, postgres: PostgresServer | None) -> Iterator[Server]:
    """A server whose upstream speaks the Responses API (the same scripted model)."""
    env = {**_server_env(upstream, postgres), "COVE_UPSTREAM_API": "responses", "COVE_WEB_SEARCH": "upstream"}
    with running_server(data_dir("cove-spec"), env) as srv:
        yield srv


@pytest.fixture(scope="module")
def rhttp(responses_server: Server) -> Iterator[httpx.Client]:
    with responses_server.http() as c:
        yield c


@pytest.fixture(scope="module")
def shttp(upstream: ScriptedUpstream, postgres: PostgresServer | None, internet: Internet) -> Iterator[httpx.Client]:
    """A server whose hosted web search asks a SearXNG instance (``tests/searx.py``)."""
    searx = searx_instance()
    write_pages(internet)
    srv = Server(data_dir("cove-spec-search"), {**_server_env(upstream, postgres), **internet.server_env(),
                                                "COVE_WEB_SEARCH": f"searxng:{searx.url}/searxng"})
    srv.start()
    with srv.http() as c:
        yield c
    srv.stop()
    searx.stop()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


def sse(response: httpx.Response) -> list[dict[str, Any]]:
    """A stream's events, framed as the specification says: ``event:`` names each event's type, no
    ``id:`` lines, and ``[DONE]`` last."""
    assert response.status_code == 200, response.read()
    events: list[dict[str, Any]] = []
    name, done = None, False
    for line in response.iter_lines():
        assert not line.startswith("id:"), line
        if line.startswith("event: "):
            name = line[7:]
        elif line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            event = json.loads(line[6:])
            assert event["type"] == name, event
            events.append(event)
    assert done, "the stream did not end with [DONE]"
    return events


def stream(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    with http.stream("POST", "/v1/responses", json={"model": MODEL, **body, "stream": True}) as response:
        events = sse(response)
    assert_valid_events(events)
    return events


def create(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = http.post("/v1/responses", json={"model": MODEL, **body})
    assert answer.status_code == 200, answer.text
    response: dict[str, Any] = answer.json()
    assert_valid(response)
    return response


def assert_valid(response: dict[str, Any]) -> None:
    errors = response_errors(response)
    assert not errors, "\n".join(errors)


def assert_valid_events(events: list[dict[str, Any]]) -> None:
    errors = [error for event in events for error in event_errors(event)]
    assert not errors, "\n".join(errors)
    numbers = [event["sequence_number"] for event in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


# -- the checks themselves ------------------------------------------------------------------------

def test_the_checks_can_fail(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="fine")])
    response = create(http, {"input": "hi"})
    broken = {**response, "created_at": "yesterday", "output": [{**response["output"][0], "content": [
        {"type": "output_text", "annotations": []}]}]}
    errors = response_errors(broken)
    assert any("created_at" in error for error in errors) and any("text" in error for error in errors), errors
    assert event_errors({"type": "response.output_text.delta", "sequence_number": 3, "delta": "x"})


def test_the_open_responses_schema_is_checked() -> None:
    if not spec_available():
        pytest.skip(f"the Open Responses schema is not at {schema_path()} (set OPENRESPONSES_SCHEMA)")
    errors = response_errors({"id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
                              "output": [], "model": "m"})
    assert any("Open Responses" in error and "temperature" in error for error in errors), errors


# -- over a Chat Completions upstream -------------------------------------------------------------

def test_text_plain_and_streamed(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="Hello there."), Reply(text="Streamed hello.")])
    response = create(http, {"input": "hi", "metadata": {"k": "v"}})
    assert response["output"][0]["content"][0]["text"] == "Hello there."
    assert (response["temperature"], response["top_p"], response["presence_penalty"],
            response["frequency_penalty"], response["top_logprobs"]) == (1, 1, 0, 0, 0)
    assert isinstance(response["created_at"], int) and isinstance(response["completed_at"], int)
    events = stream(http, {"input": "hi"})
    assert types_of(events)[-1] == "response.completed"


def test_function_call_and_its_output(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall("get_weather", '{"city": "Paris"}', id="call_w1")]),
                     Reply(text="Sunny.")])
    events = stream(http, {"input": "weather?", "tools": [WEATHER]})
    assert "response.function_call_arguments.done" in types_of(events)
    first = events[-1]["response"]
    assert first["output"][0]["type"] == "function_call"
    tool = first["tools"][0]
    assert (tool["strict"], tool["description"]) == (True, None)
    second = create(http, {"previous_response_id": first["id"], "tools": [WEATHER], "input": [
        {"type": "function_call_output", "call_id": "call_w1", "output": "sunny"}]})
    items = http.get(f"/v1/responses/{second['id']}/input_items").json()
    assert [item["type"] for item in items["data"]] == ["function_call_output"]
    for item in items["data"]:
        assert not input_item_errors(item), input_item_errors(item)


def test_reasoning_text(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(reasoning="Think first.", text="Answer.")])
    events = stream(http, {"input": "think"})
    assert "response.reasoning_text.delta" in types_of(events)
    reasoning = events[-1]["response"]["output"][0]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Think first."}]


def test_refusal_from_a_chat_upstream(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(refusal="I can't help with that.")])
    events = stream(http, {"input": "something bad"})
    types = types_of(events)
    assert "response.refusal.delta" in types and "response.output_text.delta" not in types
    done = next(event for event in events if event["type"] == "response.refusal.done")
    assert done["refusal"] == "I can't help with that."
    message = events[-1]["response"]["output"][0]
    assert message["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]


def test_incomplete_at_max_output_tokens(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="A long answer cut", finish_reason="length")])
    events = stream(http, {"input": "long", "max_output_tokens": 16})
    response = events[-1]["response"]
    assert (events[-1]["type"], response["incomplete_details"]) == ("response.incomplete",
                                                                   {"reason": "max_output_tokens"})
    assert response["output"][0]["status"] == "incomplete"


def test_failed(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="partial", stream_error="the model crashed")])
    events = stream(http, {"input": "fail"})
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["message"]


def test_background_retrieve_stream_again_and_delete(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="Later.")])
    events = stream(http, {"input": "bg", "background": True})
    assert types_of(events)[:2] == ["response.created", "response.queued"]
    response_id = events[0]["response"]["id"]
    assert_valid(http.get(f"/v1/responses/{response_id}").json())
    with http.stream("GET", f"/v1/responses/{response_id}", params={"stream": "true", "starting_after": 2}) as again:
        replayed = sse(again)
    assert_valid_events(replayed)
    assert replayed[0]["sequence_number"] == 3 and replayed[-1]["type"] == "response.completed"
    items = http.get(f"/v1/responses/{response_id}/input_items").json()
    for item in items["data"]:
        assert not input_item_errors(item), input_item_errors(item)
    deleted = http.delete(f"/v1/responses/{response_id}").json()
    assert deleted == {"id": response_id, "object": "response.deleted", "deleted": True}


def test_input_image_url_only_when_included(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    image = "data:image/png;base64,iVBORw0KGgo="
    upstream.script([Reply(text="an image")])
    response = create(http, {"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is it?"}, {"type": "input_image", "image_url": image, "detail": "low"}]}]})
    url = f"/v1/responses/{response['id']}/input_items"
    plain = http.get(url).json()["data"][0]["content"][1]
    included = http.get(url, params={"include[]": "message.input_image.image_url"}).json()["data"][0]["content"][1]
    assert (plain["image_url"], included["image_url"]) == (None, image)
    refused = http.get(url, params={"include[]": "message.everything"})
    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "include")
    for part in (plain, included):
        assert not input_item_errors({"type": "message", "role": "user", "id": "msg_1", "status": "completed",
                                      "content": [part]})


def test_logprobs_from_a_chat_upstream(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="Hi there", logprobs=True), Reply(text="Hi there", logprobs=True)])
    events = stream(http, {"input": "hi", "include": ["message.output_text.logprobs"], "top_logprobs": 2})
    assert (upstream.requests[-1]["logprobs"], upstream.requests[-1]["top_logprobs"]) == (True, 2)
    part = events[-1]["response"]["output"][0]["content"][0]
    assert [entry["token"] for entry in part["logprobs"]] == ["Hi t", "here"]
    plain = create(http, {"input": "hi"})
    assert "logprobs" not in upstream.requests[-1]
    assert plain["output"][0]["content"][0]["logprobs"] == []


def test_cancelled(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="slow", delay=30)])
    response = create(http, {"input": "bg", "background": True})
    # Cancelled while running (asking the upstream), so no later test's turn is taken by it.
    eventually(lambda: upstream.requests, timeout=10, what="the background response to ask the upstream")
    cancelled = http.post(f"/v1/responses/{response['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert_valid(cancelled)


@pytest.mark.parametrize(("tool", "call"), [
    ({"type": "apply_patch"}, ToolCall("apply_patch", json.dumps({"type": "create_file", "path": "a.txt",
                                                                   "diff": "+hello"}))),
    ({"type": "local_shell"}, ToolCall("local_shell", json.dumps({"command": ["ls"]}))),
    ({"type": "shell", "environment": {"type": "local"}}, ToolCall("shell", json.dumps({"commands": ["ls"]}))),
])
def test_client_side_tool_calls(http: httpx.Client, upstream: ScriptedUpstream, tool: dict[str, Any],
                                call: ToolCall) -> None:
    upstream.script([Reply(tool_calls=[call])])
    events = stream(http, {"input": "do it", "tools": [tool]})
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == [f"{call.name}_call"]


def test_websocket_events(server: Server, upstream: ScriptedUpstream) -> None:
    """WebSocket mode sends the SSE events, checked the same way, with ``include`` honoured."""
    upstream.script([Reply(reasoning="Hm.", text="Over the socket.", logprobs=True)])
    client = server.client()
    with client.responses.connect() as connection:
        connection.response.create(model=MODEL, input="hi", include=["message.output_text.logprobs"])
        events = []
        for event in connection:
            events.append(event.to_dict())
            if event.type in ("response.completed", "response.failed", "error"):
                break
    assert_valid_events(events)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][1]["content"][0]["logprobs"]


def test_compaction(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="Use pytest."), Reply(text="SUMMARY: pytest."), Reply(text="SUMMARY: again.")])
    first = create(http, {"input": "How do I test this?"})
    events = stream(http, {"previous_response_id": first["id"], "input": [{"type": "compaction_trigger"}]})
    assert "response.compaction.compacting" in types_of(events)
    assert [item["type"] for item in events[-1]["response"]["output"]] == ["compaction"]
    compacted = http.post("/v1/responses/compact", json={"model": MODEL, "previous_response_id": first["id"]})
    assert compacted.status_code == 200, compacted.text
    errors = compacted_errors(compacted.json())
    assert not errors, "\n".join(errors)


def test_conversation_items(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    image = "data:image/png;base64,iVBORw0KGgo="
    conversation = http.post("/v1/conversations", json={}).json()["id"]
    upstream.script([Reply(reasoning="Look.", text="A pixel.")])
    create(http, {"conversation": conversation, "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": image}]}]})
    url = f"/v1/conversations/{conversation}/items"
    items = http.get(url, params={"order": "asc"}).json()["data"]
    assert [item["type"] for item in items] == ["message", "reasoning", "message"]
    assert items[0]["content"][0]["image_url"] is None
    for item in items:
        assert not input_item_errors(item), input_item_errors(item)
    one = http.get(f"{url}/{items[0]['id']}", params={"include[]": "message.input_image.image_url"}).json()
    assert one["content"][0] == {"type": "input_image", "image_url": image, "detail": "auto"}


# -- hosted tools in containers -------------------------------------------------------------------

def test_hosted_shell(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall("shell", json.dumps({"commands": ["echo spec"]}))]),
                     Reply(text="It printed spec.")])
    events = stream(http, {"input": "run it", "tools": [SHELL]})
    types = types_of(events)
    assert "response.shell_call_command.added" in types and "response.shell_call_output_content.done" in types
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["shell_call", "shell_call_output", "message"]


@pytest.mark.parametrize(("tools", "call", "types"), [
    ([{"type": "apply_patch", "container": "auto"}],
     ToolCall("apply_patch", json.dumps({"type": "create_file", "path": "/app/a.txt", "diff": "+hi\n"})),
     ["apply_patch_call", "apply_patch_call_output"]),
    ([{"type": "text_editor_20250429"}, SHELL],  # the shell's container_auto gives the editor its container
     ToolCall("str_replace_based_edit_tool", json.dumps({"command": "create", "path": "/app/b.txt", "file_text": "x"})),
     ["custom_tool_call", "custom_tool_call_output"]),
    ([SHELL], ToolCall("shell", json.dumps({"commands": "not a list"})), ["shell_call", "shell_call_output"]),
])
def test_hosted_edits_and_a_refused_call(http: httpx.Client, upstream: ScriptedUpstream,
                                         tools: list[dict[str, Any]], call: ToolCall, types: list[str]) -> None:
    upstream.script([Reply(tool_calls=[call]), Reply(text="done")])
    events = stream(http, {"input": "edit", "tools": tools})
    assert [item["type"] for item in events[-1]["response"]["output"]] == [*types, "message"]


COMPUTER = {"type": "computer_use_preview", "display_width": 800, "display_height": 600, "environment": "linux"}


def test_hosted_computer_calls_and_a_client_side_one(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall("computer", json.dumps({"type": "move", "x": 5, "y": 5}))]),
                     Reply(tool_calls=[ToolCall("computer", json.dumps({"type": "teleport"}))]),  # refused
                     Reply(text="I saw the desktop.")])
    events = stream(http, {"input": "look", "tools": [{**COMPUTER, "container": "auto"}]})
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["computer_call", "computer_call_output"] * 2 + ["message"]
    assert [item["status"] for item in output[1:4:2]] == ["completed", "failed"]
    upstream.script([Reply(tool_calls=[ToolCall("computer", json.dumps({"type": "wait"}))]), Reply(text="seen")])
    client_side = create(http, {"input": "again", "tools": [COMPUTER]})
    call = client_side["output"][-1]
    answer = {"type": "computer_call_output", "call_id": call["call_id"],
              "output": {"type": "computer_screenshot", "image_url": output[1]["output"]["image_url"]}}
    create(http, {"input": [answer], "tools": [COMPUTER], "previous_response_id": client_side["id"]})
    items = http.get(f"/v1/responses/{client_side['id']}/input_items").json()["data"]
    assert not [error for item in items for error in input_item_errors(item)]


def test_a_held_computer_call_and_its_acknowledgement(rhttp: httpx.Client, upstream: ScriptedUpstream) -> None:
    check = {"id": "cu_sc_spec", "code": "irrelevant_domain", "message": "Not the site you asked for."}
    upstream.script([Reply(native_items=[{"type": "computer_call", "id": "cu_1", "call_id": "call_held",
                                          "status": "completed", "pending_safety_checks": [check],
                                          "action": {"type": "wait"}}]), Reply(text="waited")])
    tool = {**COMPUTER, "container": "auto"}
    events = stream(rhttp, {"input": "wait", "tools": [tool]})
    held = events[-1]["response"]
    assert held["output"][-1]["pending_safety_checks"] == [check]
    answer = {"type": "computer_call_output", "call_id": "call_held", "acknowledged_safety_checks": [check],
              "output": {"type": "computer_screenshot"}}
    events = stream(rhttp, {"input": [answer], "tools": [tool], "previous_response_id": held["id"]})
    assert [item["type"] for item in events[-1]["response"]["output"]] == ["computer_call_output", "message"]
    items = rhttp.get(f"/v1/responses/{events[-1]['response']['id']}/input_items").json()["data"]
    assert not [error for item in items for error in input_item_errors(item)]


def test_code_interpreter_outputs_only_when_included(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    tools = [{"type": "code_interpreter", "container": {"type": "auto"}}]
    code = "print(6 * 7)\nopen('/mnt/data/answer.txt', 'w').write('42')"
    call = Reply(tool_calls=[ToolCall("code_interpreter", json.dumps({"code": code}))])
    upstream.script([call, Reply(text="42."), call, Reply(text="42 again.")])
    events = stream(http, {"input": "compute", "tools": tools})
    assert "response.output_text.annotation.added" in types_of(events)
    plain = events[-1]["response"]
    included = create(http, {"input": "compute", "tools": tools, "include": ["code_interpreter_call.outputs"]})
    assert plain["output"][0]["outputs"] is None
    assert included["output"][0]["outputs"] == [{"type": "logs", "logs": "42\n"}]
    assert http.get(f"/v1/responses/{plain['id']}").json()["output"][0]["outputs"] is None
    again = http.get(f"/v1/responses/{plain['id']}", params={"include[]": "code_interpreter_call.outputs"}).json()
    assert again["output"][0]["outputs"] == [{"type": "logs", "logs": "42\n"}]


# -- over a Responses upstream ----------------------------------------------------------------------

def test_hosted_web_search_with_citations_and_a_failed_call(shttp: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall("web_search", json.dumps({"query": "pandas"})),
                                       ToolCall("open_page", json.dumps({"url": "file:///etc/passwd"}))]),
                     Reply(tool_calls=[ToolCall("find_in_page", json.dumps({"url": PANDAS, "pattern": "pyarrow"}))]),
                     Reply(text="pandas 2.2 adds pyarrow strings [1].")])
    include = ["web_search_call.action.sources", "web_search_call.results"]
    events = stream(shttp, {"input": "pandas?", "tools": [{"type": "web_search"}], "include": include})
    types = types_of(events)
    for kind in ("in_progress", "searching", "completed"):
        assert f"response.web_search_call.{kind}" in types
    assert "response.output_text.annotation.added" in types
    output = events[-1]["response"]["output"]
    assert [(item["type"], item["status"]) for item in output] == [
        ("web_search_call", "completed"), ("web_search_call", "failed"), ("web_search_call", "completed"),
        ("message", "completed")]
    assert output[-1]["content"][0]["annotations"][0]["type"] == "url_citation"
    assert_valid(shttp.get(f"/v1/responses/{events[-1]['response']['id']}", params={"include[]": include}).json())


def test_the_upstreams_own_web_search_and_citations(rhttp: httpx.Client, upstream: ScriptedUpstream) -> None:
    native = {"type": "web_search_call", "id": "ws_up", "status": "completed",
              "action": {"type": "search", "query": "pandas", "sources": [{"type": "url", "url": PANDAS}]}}
    citation = {"type": "url_citation", "url": PANDAS, "title": "pandas", "start_index": 0, "end_index": 6}
    upstream.script([Reply(native_items=[native], native_first=True, text="pandas 2.2 is out.",
                           annotations=[citation])])
    events = stream(rhttp, {"input": "pandas?", "tools": [{"type": "web_search_preview"}]})
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["web_search_call", "message"]
    assert output[1]["content"][0]["annotations"] == [citation]
    assert "response.output_text.annotation.added" in types_of(events)


def test_reasoning_summary_and_encrypted_content_round_trip(rhttp: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(summary=["Considered the options."], encrypted_content="opaque-1", text="First.")])
    include = ["reasoning.encrypted_content"]
    events = stream(rhttp, {"input": "hi", "store": False, "include": include, "reasoning": {"summary": "auto"}})
    types = types_of(events)
    for kind in ("response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
                 "response.reasoning_summary_text.done", "response.reasoning_summary_part.done"):
        assert kind in types
    assert upstream.requests[-1]["include"] == include
    output = events[-1]["response"]["output"]
    reasoning = output[0]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Considered the options."}]
    assert reasoning["encrypted_content"] == "opaque-1"
    upstream.script([Reply(text="Second.")])
    follow_up = [*output, {"role": "user", "content": "and then?"}]
    create(rhttp, {"input": follow_up, "store": False, "include": include})
    sent = upstream.requests[-1]["input"][0]
    assert (sent["type"], sent["id"], sent["encrypted_content"]) == ("reasoning", reasoning["id"], "opaque-1")
    assert sent["summary"] == reasoning["summary"]


def test_encrypted_content_only_when_included(rhttp: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(summary=["Thought."], encrypted_content="opaque-2", text="Done."),
                     Reply(summary=["Again."], encrypted_content="opaque-3", text="Done.")])
    plain = create(rhttp, {"input": "hi"})
    assert "include" not in upstream.requests[-1]
    assert "encrypted_content" not in plain["output"][0]
    included = create(rhttp, {"input": "hi", "include": ["reasoning.encrypted_content"]})
    assert included["output"][0]["encrypted_content"] == "opaque-3"
    retrieved = rhttp.get(f"/v1/responses/{included['id']}").json()
    assert "encrypted_content" not in retrieved["output"][0]
    again = rhttp.get(f"/v1/responses/{included['id']}", params={"include[]": "reasoning.encrypted_content"}).json()
    assert again["output"][0]["encrypted_content"] == "opaque-3"


def test_refusal_and_logprobs_from_a_responses_upstream(rhttp: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(refusal="No."), Reply(text="Yes", logprobs=True)])
    events = stream(rhttp, {"input": "bad"})
    assert "response.refusal.done" in types_of(events)
    assert events[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]
    included = create(rhttp, {"input": "ok", "include": ["message.output_text.logprobs"]})
    assert upstream.requests[-1]["include"] == ["message.output_text.logprobs"]
    logprobs = included["output"][0]["content"][0]["logprobs"]
    assert [entry["token"] for entry in logprobs] == ["Yes"]


def test_the_sdk_stream_helper_builds_the_same_response(responses_server: Server, upstream: ScriptedUpstream) -> None:
    """Two summary parts, then text and a refusal in one message: the SDK's accumulator agrees with Cove."""
    upstream.script([Reply(summary=["First thought.", "Second thought."], text="Partly", refusal="No more.")])
    client = responses_server.client()
    with client.responses.stream(model=MODEL, input="x") as events:
        kinds = [event.type for event in events]
        final = events.get_final_response()
    assert kinds.count("response.reasoning_summary_part.added") == 2
    reasoning, message = final.output
    assert reasoning.type == "reasoning" and [part.text for part in reasoning.summary] == [
        "First thought.", "Second thought."]
    assert message.type == "message"
    assert [(part.type, getattr(part, "text", None) or getattr(part, "refusal", None)) for part in message.content] == [
        ("output_text", "Partly"), ("refusal", "No more.")]
