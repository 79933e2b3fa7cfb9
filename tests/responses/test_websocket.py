"""WebSocket mode through the SDK's own ``client.responses.connect()``: sequential responses and
continuation on one socket, the same events as SSE, errors that leave the socket usable, the key on
the handshake, steering, reconnecting, and a client that stops reading."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.resources.responses.responses import ResponsesConnection
from openai.types.websocket_reconnection import ReconnectingEvent
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Opcode
from websockets.sync.client import connect

from tests.conftest import KEYS, Server, _server_env, data_dir, running_server
from tests.helpers import IdleWebSocket
from tests.polling import eventually
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall, last_user_text

pytestmark = pytest.mark.root

MODEL = "scripted-model"
TERMINAL = ("response.completed", "response.failed", "response.incomplete")
SHELL = {"type": "shell", "environment": {"type": "container_auto"}}


def _until_terminal(connection: ResponsesConnection) -> list[Any]:
    """One response's events, through its terminal event (an ``error`` event ends it too)."""
    events = []
    for event in connection:
        events.append(event)
        if event.type in (*TERMINAL, "error"):
            return events
    raise AssertionError(f"the socket closed after {[e.type for e in events]}")


def _sse(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        return [json.loads(line[6:]) for line in response.iter_lines()
                if line.startswith("data: ") and line != "data: [DONE]"]


def test_sequential_responses_continue_on_one_socket(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="First answer."), Reply(text="Second answer.")])
    with client.responses.connect() as connection:
        connection.response.create(model=MODEL, input="one")
        first = _until_terminal(connection)
        assert first[-1].type == "response.completed"
        first_id = first[-1].response.id
        connection.response.create(model=MODEL, input="two", previous_response_id=first_id)
        second = _until_terminal(connection)
    assert second[-1].type == "response.completed"
    assert second[-1].response.output_text == "Second answer."
    assert second[-1].response.previous_response_id == first_id
    texts = [m["content"] for m in upstream.requests[1]["messages"] if m["role"] != "system"]
    assert texts == ["one", "First answer.", "two"]  # the first response's context came along
    assert client.responses.retrieve(second[-1].response.id).output_text == "Second answer."


def test_events_are_the_sse_events(client: openai.OpenAI, http: httpx.Client, upstream: ScriptedUpstream) -> None:
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    reply = Reply(text="Let me look.", tool_calls=[ToolCall(name="lookup", arguments='{"q": "some words"}')])
    upstream.script([reply, reply])
    body = {"model": MODEL, "input": "find", "tools": tools}
    sse = _sse(http, body)
    with client.responses.connect() as connection:
        connection.send({"type": "response.create", **body})  # type: ignore[typeddict-item]
        over_socket = [e.to_dict() for e in _until_terminal(connection)]
    assert [(e["type"], e["sequence_number"]) for e in over_socket] == [(e["type"], e["sequence_number"]) for e in sse]
    assert over_socket[-1]["response"]["output"][1]["arguments"] == sse[-1]["response"]["output"][1]["arguments"]
    assert not any("stream_id" in e for e in over_socket)


def test_store_false_continues_on_the_same_socket_only(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="Kept in the socket."), Reply(text="Continued."), Reply(text="never")])
    with client.responses.connect() as connection:
        connection.response.create(model=MODEL, input="remember", store=False)
        first = _until_terminal(connection)[-1].response
        connection.response.create(model=MODEL, input="go on", store=False, previous_response_id=first.id)
        second = _until_terminal(connection)[-1]
    assert second.type == "response.completed" and second.response.output_text == "Continued."
    assert [m["content"] for m in upstream.requests[1]["messages"]] == ["remember", "Kept in the socket.", "go on"]
    with client.responses.connect() as connection:  # a new socket has no cache: as on OpenAI, not found
        connection.response.create(model=MODEL, input="again", previous_response_id=first.id)
        [error] = _until_terminal(connection)
    assert error.type == "error" and error.error.code == "previous_response_not_found"
    assert len(upstream.requests) == 2


def test_the_async_client(server: Server, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="Async works.")])

    async def talk() -> list[Any]:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEYS["alpha"], max_retries=0)
        async with client, client.responses.connect() as connection:
            await connection.response.create(model=MODEL, input="hi")
            events = []
            async for event in connection:
                events.append(event)
                if event.type in TERMINAL:
                    return events
        raise AssertionError("the socket closed early")

    events = asyncio.run(talk())
    assert events[0].type == "response.created" and events[-1].response.output_text == "Async works."


def test_store_false_chain_keeps_its_container(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall(name="shell", arguments='{"commands": ["echo kept > /tmp/mark"]}')]),
                     Reply(text="Wrote it."),
                     Reply(tool_calls=[ToolCall(name="shell", arguments='{"commands": ["cat /tmp/mark"]}')]),
                     Reply(text="Read it.")])
    with client.responses.connect() as connection:
        connection.response.create(model=MODEL, input="write", store=False, tools=[SHELL])  # type: ignore[list-item]
        first = _until_terminal(connection)[-1].response
        connection.response.create(model=MODEL, input="read", store=False, tools=[SHELL],  # type: ignore[list-item]
                                   previous_response_id=first.id)
        second = _until_terminal(connection)[-1].response
    assert first.container_id is not None and second.container_id == first.container_id  # type: ignore[attr-defined]
    assert second.status == "completed"
    assert "kept" in json.dumps(second.output[1].to_dict())


def test_a_warm_up_generates_nothing_and_is_chained_from(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="Warmed up.")])
    with client.responses.connect() as connection:
        connection.response.create(model=MODEL, input="some context", generate=False)
        warm = _until_terminal(connection)
        connection.response.create(model=MODEL, input="now", previous_response_id=warm[-1].response.id)
        answer = _until_terminal(connection)
    assert [e.type for e in warm] == ["response.created", "response.in_progress", "response.completed"]
    assert warm[-1].response.output == []
    assert answer[-1].response.output_text == "Warmed up."
    assert len(upstream.requests) == 1  # the warm-up never reached the model
    assert [m["content"] for m in upstream.requests[0]["messages"]] == ["some context", "now"]


def test_errors_leave_the_socket_usable(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="Still here.")])
    with client.responses.connect() as connection:
        connection.response.create(model=MODEL, input="hi", previous_response_id="resp_unknown")
        [unknown] = _until_terminal(connection)
        connection.send({"type": "response.create", "model": MODEL, "input": "hi", "temperature": 7})
        [invalid] = _until_terminal(connection)
        connection.send_raw('{"type": "response.create", "model": "scripted-model", "bogus": 1}')
        [unknown_param] = _until_terminal(connection)
        connection.send_raw("not json")
        [not_json] = _until_terminal(connection)
        connection.send({"type": "response.create", "model": MODEL, "input": "hi", "background": True})
        [background] = _until_terminal(connection)
        connection.response.create(model=MODEL, input="hi")
        good = _until_terminal(connection)
    assert (unknown.status, unknown.error.type, unknown.error.code, unknown.error.param) == (
        404, "invalid_request_error", "previous_response_not_found", "previous_response_id")
    assert "resp_unknown" in unknown.error.message
    assert (invalid.status, invalid.error.param, invalid.error.code) == (400, "temperature", "invalid_value")
    assert (unknown_param.status, unknown_param.error.code) == (400, "unknown_parameter")
    assert unknown_param.error.message == "Unknown parameter: 'bogus'."
    assert (not_json.status, not_json.error.code) == (400, "invalid_json")
    assert (background.status, background.error.param) == (400, "background")
    assert good[-1].type == "response.completed" and good[-1].response.output_text == "Still here."


def test_the_key_goes_on_the_handshake(server: Server) -> None:
    url = server.url.replace("http://", "ws://") + "/v1/responses"
    for headers, code in (({}, "missing_api_key"), ({"Authorization": "Bearer wrong"}, "invalid_api_key")):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers)
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body or b"")["error"]["code"] == code
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(InvalidStatus):
        wrong.responses.connect().enter()
    with connect(url, additional_headers={"Authorization": f"Bearer {KEYS['alpha']}"}) as ws:
        ws.send(json.dumps({"type": "response.steer", "previous_response_id": "resp_x", "input": "hi"}))
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == "response_not_found"


def test_lanes_echo_their_stream_id(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="On a lane.")])
    with client.responses.connect() as connection:
        connection.response.create(model=MODEL, input="hi", stream_id="lane-1")
        events = _until_terminal(connection)
        connection.response.create(model=MODEL, input="hi", stream_id="bad lane")
        [error] = _until_terminal(connection)
    assert {e.stream_id for e in events} == {"lane-1"}
    assert events[-1].type == "response.completed"
    assert error.error.code == "invalid_stream_id"


def test_steer_during_a_slow_turn_starts_a_successor(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="slowly " * 40, chunk_delay=0.02),
                     lambda body: Reply(text=f"Now: {last_user_text(body)}")])
    with client.responses.connect() as connection:
        connection.response.create(model=MODEL, input="start")
        created = next(iter(connection))
        assert created.type == "response.created"
        target = created.response.id
        connection.response.steer(previous_response_id=target, input="use French")
        events = _until_terminal(connection)
        first = events[-1]
        successor = _until_terminal(connection)
        connection.response.steer(previous_response_id=target, input="too late")
        [late] = _next_event(connection)
    accepted = [e for e in events if e.type == "response.steer.accepted"]
    assert len(accepted) == 1 and accepted[0].steer.previous_response_id == target
    assert first.type == "response.completed"  # no boundary before its answer: it completes, then the successor
    assert successor[0].type == "response.created"
    assert successor[0].response.previous_response_id == target
    assert successor[-1].type == "response.completed"
    assert successor[-1].response.output_text == "Now: use French"
    inputs = client.responses.input_items.list(successor[-1].response.id).data
    assert [item.content[0].text for item in inputs] == ["use French"]  # type: ignore[union-attr]
    assert late.type == "response.steer.failed" and late.error.code == "response_already_completed"


def _next_event(connection: ResponsesConnection) -> list[Any]:
    return [next(iter(connection))]


def test_a_compacting_response_is_not_steered(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="slowly " * 40, chunk_delay=0.02)])
    with client.responses.connect() as connection:
        connection.response.create(model=MODEL, input="start",
                                   context_management=[{"type": "compaction", "compact_threshold": 100_000}])
        created = next(iter(connection))
        connection.response.steer(previous_response_id=created.response.id, input="change course")
        events = _until_terminal(connection)
    [refused] = [e for e in events if e.type.startswith("response.steer")]
    assert refused.type == "response.steer.failed" and refused.error.code == "steering_not_supported"
    assert refused.steer.input == "change course" and refused.steer.id is None
    assert events[-1].type == "response.completed" and len(upstream.requests) == 1


def test_steer_ends_a_hosted_tool_run_at_its_boundary(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([
        Reply(tool_calls=[ToolCall(name="shell", arguments='{"commands": ["echo forty-two"]}')], delay=1.0),
        lambda body: Reply(text=f"Steered by: {last_user_text(body)}"),
    ])
    with client.responses.connect() as connection:
        connection.response.create(model=MODEL, input="run it", tools=[SHELL])  # type: ignore[list-item]
        created = next(iter(connection))
        connection.response.steer(previous_response_id=created.response.id, input=[
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "stop and sum up"}]}])
        first = _until_terminal(connection)
        successor = _until_terminal(connection)
    assert "response.steer.accepted" in [e.type for e in first]
    ended = first[-1].response
    assert first[-1].type == "response.incomplete" and ended.incomplete_details.reason == "steered"
    assert [item.type for item in ended.output] == ["shell_call", "shell_call_output"]
    done = successor[-1].response
    assert done.status == "completed" and done.output_text == "Steered by: stop and sum up"
    assert done.previous_response_id == ended.id
    assert "forty-two" in json.dumps(upstream.requests[-1]["messages"])  # the tool output came along
    assert len(upstream.requests) == 2


def test_steer_waits_for_client_tool_output(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    upstream.script([Reply(tool_calls=[ToolCall(name="lookup", id="call_9")], delay=1.0),
                     Reply(text="Looked it up.")])
    with client.responses.connect() as connection:
        connection.response.create(model=MODEL, input="look", tools=tools)  # type: ignore[arg-type]
        created = next(iter(connection))
        connection.response.steer(previous_response_id=created.response.id, input="and be brief")
        first = _until_terminal(connection)
        [pending] = _next_event(connection)
        connection.response.create(model=MODEL, tools=tools, previous_response_id=created.response.id,  # type: ignore[arg-type]
                                   input=[{"type": "function_call_output", "call_id": "call_9", "output": "42"}])
        second = _until_terminal(connection)
    assert first[-1].type == "response.completed"
    assert pending.type == "response.steer.pending" and pending.reason == "waiting_for_required_input"
    assert [(s.type, s.call_id, s.name) for s in pending.required_input] == [  # type: ignore[union-attr]
        ("function_call_output", "call_9", "lookup")]
    assert second[-1].response.output_text == "Looked it up."
    messages = upstream.requests[1]["messages"]
    assert messages[-2]["content"] == "and be brief"  # the queued input comes first, then the request's own
    assert messages[-1]["role"] == "tool"


def test_reconnect_continues_a_stored_response(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="Before."), Reply(text="After.")])
    with client.responses.connect() as connection:
        connection.response.create(model=MODEL, input="one")
        first = _until_terminal(connection)[-1].response
    with client.responses.connect() as connection:
        connection.response.create(model=MODEL, input="two", previous_response_id=first.id)
        second = _until_terminal(connection)[-1]
    assert second.type == "response.completed" and second.response.output_text == "After."
    assert [m["content"] for m in upstream.requests[1]["messages"]] == ["one", "Before.", "two"]


def test_the_sdk_reconnects_across_a_restart(small_limits_server: Server, upstream: ScriptedUpstream) -> None:
    """A restart closes sockets with 1012 (service restart), which the SDK reconnects from when given
    ``on_reconnecting``; the stored chain continues on the new socket."""
    upstream.script([Reply(text="Before the restart."), Reply(text="After it.")])
    close_codes: list[int] = []

    def reconnecting(event: ReconnectingEvent) -> None:
        close_codes.append(event.close_code)

    events: queue.Queue[Any] = queue.Queue()
    client = small_limits_server.client()
    with client.responses.connect(on_reconnecting=reconnecting, initial_delay=0.2, max_retries=12) as connection:
        connection.response.create(model=MODEL, input="one")
        first = _until_terminal(connection)[-1].response
        reader = threading.Thread(target=lambda: [events.put(event) for event in connection], daemon=True)
        reader.start()
        small_limits_server.stop()
        eventually(lambda: close_codes, timeout=30, what="the SDK to start reconnecting")
        small_limits_server.start()
        connection.response.create(model=MODEL, input="two", previous_response_id=first.id)
        second = []
        while not second or second[-1].type not in (*TERMINAL, "error"):
            second.append(events.get(timeout=60))
    assert close_codes[0] == 1012
    assert second[-1].type == "response.completed" and second[-1].response.output_text == "After it."
    assert [m["content"] for m in upstream.requests[1]["messages"]] == ["one", "Before the restart.", "two"]


@pytest.fixture(scope="module")
def small_limits_server(upstream: ScriptedUpstream) -> Iterator[Server]:
    """This module's own server, with small limits (a test may restart it)."""
    env = {**_server_env(upstream, None), "COVE_WEBSOCKET_BUFFER": "64k", "COVE_MAX_REQUEST": "256k"}
    with running_server(data_dir("cove-ws"), env) as srv:
        yield srv


def test_a_client_that_stops_reading_is_dropped(small_limits_server: Server, upstream: ScriptedUpstream) -> None:
    """Events past the buffer are not held for a client that does not read: after ten seconds without
    room the socket closes (1008). The run does not wait for it, and a reading client gets a response
    whose final events alone are several times the buffer."""
    flood, text = "x" * 6_000_000, "y" * 2_000_000  # the flood's deltas alone pass what the kernel buffers
    upstream.script([Reply(text=flood, chunk_chars=16_000), Reply(text=text, chunk_chars=16_000)])
    client = small_limits_server.client()
    idle = IdleWebSocket(small_limits_server.url.replace("http://", "ws://") + "/v1/responses",
                         {"Authorization": f"Bearer {KEYS['alpha']}"})
    idle.send(json.dumps({"type": "response.create", "model": MODEL, "input": "flood"}))
    created = idle.frame()
    assert created is not None and json.loads(created.data)["type"] == "response.created"
    response_id = json.loads(created.data)["response"]["id"]
    eventually(lambda: client.responses.retrieve(response_id).status == "completed",
               timeout=60, what="the flooding response to complete, though nobody reads it")
    eventually(lambda: "its client stopped reading" in small_limits_server.log.read_text(), timeout=60,
               what="the server to drop the client that does not read")
    received = []
    while (frame := idle.frame()) is not None and frame.opcode is not Opcode.CLOSE:
        received.append(json.loads(frame.data)["type"])
    assert frame is not None and Close.parse(frame.data).code == 1008
    assert "response.completed" not in received
    idle.sock.close()
    with client.responses.connect(websocket_connection_options={"max_size": None}) as reader:
        reader.response.create(model=MODEL, input="flood again")
        events = _until_terminal(reader)
    assert events[-1].type == "response.completed" and events[-1].response.output_text == text


def test_a_message_past_the_request_cap_closes_the_socket(small_limits_server: Server) -> None:
    """A message is held whole, like a body: past ``COVE_MAX_REQUEST`` the socket closes (1009, too big),
    as the same body over HTTP is a 413."""
    url = small_limits_server.url.replace("http://", "ws://") + "/v1/responses"
    body = {"model": MODEL, "input": "x" * 300_000}
    with connect(url, additional_headers={"Authorization": f"Bearer {KEYS['alpha']}"}, max_size=None) as ws:
        ws.send(json.dumps({"type": "response.create", **body}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    with small_limits_server.http() as http:
        assert http.post("/v1/responses", json=body).status_code == 413
