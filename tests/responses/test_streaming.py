"""The SSE event grammar, the SDK's stream helper, and disconnecting clients."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import Server
from tests.polling import eventually
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

MODEL = "scripted-model"


def _events(http: httpx.Client, body: dict[str, object]) -> list[dict[str, object]]:
    """Reads a stream raw, checking the framing: ``event:`` equals ``type``, then ``[DONE]``."""
    events = []
    with http.stream("POST", "/v1/responses", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        saw_done = False
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                if line == "data: [DONE]":
                    saw_done = True
                    continue
                event = json.loads(line[6:])
                assert event["type"] == name
                events.append(event)
        assert saw_done
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def test_text_event_grammar(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="Streaming works nicely.")])
    events = _events(http, {"model": MODEL, "input": "hi", "stream": True})
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[2:4] == ["response.output_item.added", "response.content_part.added"]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) > 1
    assert "".join(str(e["delta"]) for e in deltas) == "Streaming works nicely."
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    completed = events[-1]["response"]
    assert completed["status"] == "completed"  # type: ignore[index]
    assert completed["output"][0]["content"][0]["text"] == "Streaming works nicely."  # type: ignore[index]
    item_ids = {e["item_id"] for e in events if "item_id" in e}
    assert item_ids == {completed["output"][0]["id"]}  # type: ignore[index]


def test_function_call_events(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall(name="lookup", arguments='{"query": "a fairly long query"}')])])
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    events = _events(http, {"model": MODEL, "input": "find", "tools": tools, "stream": True})
    types = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in types
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert json.loads(str(done["arguments"])) == {"query": "a fairly long query"}
    assert types[-2:] == ["response.output_item.done", "response.completed"]


def test_sdk_stream_helper(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="Helper-compatible stream.")])
    seen = []
    with client.responses.stream(model=MODEL, input="hi") as stream:
        for event in stream:
            seen.append(event.type)
        final = stream.get_final_response()
    assert final.output_text == "Helper-compatible stream."
    assert seen[0] == "response.created" and seen[-1] == "response.completed"


def test_upstream_down_fails_clearly(own_server: Server) -> None:
    own_server.stop()
    own_server.env["COVE_UPSTREAM_URL"] = "http://127.0.0.1:9/v1"
    own_server.start()
    client = own_server.client()
    with own_server.http() as http:
        events = _events(http, {"model": MODEL, "input": "hi", "stream": True})
    assert events[-1]["type"] == "response.failed"
    error = events[-1]["response"]["error"]  # type: ignore[index]
    assert "could not be reached" in error["message"]
    failed = client.responses.create(model=MODEL, input="hi")
    assert failed.status == "failed" and failed.error is not None
    assert client.responses.retrieve(failed.id).status == "failed"


def test_disconnect_does_not_kill_stored_response(client: openai.OpenAI, server: Server,
                                                  upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="slow and steady " * 20, chunk_delay=0.02)])
    response_id = None
    with server.http() as http, http.stream("POST", "/v1/responses",
                                            json={"model": MODEL, "input": "hi", "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"response.created"' in line:
                response_id = json.loads(line[6:])["response"]["id"]
            if "output_text.delta" in line:
                break  # hang up mid-stream
    assert response_id is not None
    final = eventually(lambda: (r := client.responses.retrieve(response_id)).status == "completed" and r,
                       what="the abandoned stream's response to complete")
    assert final.output_text == "slow and steady " * 20


def test_disconnect_lets_go_of_a_response_nobody_stores(server: Server, upstream: ScriptedUpstream) -> None:
    """With ``store: false`` the stream's reader is all a response has: when it hangs up, the run stops
    and hangs up on the upstream in turn, rather than generating to the end for nobody."""
    upstream.script([Reply(text="word " * 200, chunk_delay=0.02)])  # 4 s to the end
    with server.http() as http, http.stream("POST", "/v1/responses", json={
            "model": MODEL, "input": "hi", "stream": True, "store": False}) as response:
        for line in response.iter_lines():
            if "output_text.delta" in line:
                break  # hang up mid-stream
    eventually(lambda: upstream.abandoned == 1, timeout=3, what="the upstream to see its stream abandoned")
