"""ResponsesApiModel against a scripted Responses API server over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from cove.errors import ContextWindowExceeded, UpstreamError
from cove.upstream.base import (
    Finish,
    ModelRequest,
    NativeItem,
    ReasoningDelta,
    TextAnnotations,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
)
from cove.upstream.responses import ResponsesApiModel
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall
from tests.upstream.conftest import Collect

SHELL_CALL = {"type": "shell_call", "id": "sh_1", "call_id": "call_sh", "status": "completed",
              "action": {"commands": ["ls -la", "pwd"], "timeout_ms": 10000}}
PATCH_CALL = {"type": "apply_patch_call", "id": "apc_1", "call_id": "call_ap", "status": "completed",
              "operation": {"type": "create_file", "path": "a.txt", "diff": "+hello\n"}}


def model(upstream: ScriptedUpstream) -> ResponsesApiModel:
    return ResponsesApiModel(upstream.url, max_retries=0)


def ask(**fields: Any) -> ModelRequest:
    return ModelRequest(model="gpt-5", input=[{"role": "user", "content": "hi"}], **fields)


def test_items_pass_through_without_coves_ids_and_statuses(upstream: ScriptedUpstream, collect: Collect) -> None:
    schema = {"type": "object", "properties": {}}
    tools = [{"type": "function", "name": "f", "parameters": schema},
             {"type": "shell", "environment": {"type": "local"}}]
    request = ModelRequest(model="gpt-5", instructions="Be brief.", tools=tools, tool_choice="auto",
                           max_output_tokens=100, temperature=0.5, reasoning={"effort": "high"},
                           text_format={"type": "json_schema", "name": "x", "schema": schema}, input=[
        {"type": "message", "id": "msg_cove1", "status": "completed", "role": "user",
         "content": [{"type": "input_text", "text": "list files"}]},
        {"type": "reasoning", "id": "rs_plain", "summary": []},
        {"type": "reasoning", "id": "rs_enc", "summary": [], "encrypted_content": "gAAAA"},
        {**SHELL_CALL},
        {"type": "shell_call_output", "id": "sho_1", "call_id": "call_sh", "status": "completed",
         "output": [{"stdout": "a.txt\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]},
    ])
    collect(model(upstream), request)
    sent = upstream.requests[-1]
    assert sent["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
        {"type": "reasoning", "id": "rs_enc", "summary": [], "encrypted_content": "gAAAA"},
        {"type": "shell_call", "call_id": "call_sh", "action": SHELL_CALL["action"]},
        {"type": "shell_call_output", "call_id": "call_sh",
         "output": [{"stdout": "a.txt\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]},
    ]
    assert sent["store"] is False and sent["stream"] is True
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    assert sent["instructions"] == "Be brief." and sent["max_output_tokens"] == 100
    assert sent["reasoning"] == {"effort": "high"} and sent["temperature"] == 0.5
    assert sent["text"] == {"format": {"type": "json_schema", "name": "x", "schema": schema}}
    assert "parallel_tool_calls" not in sent and "top_p" not in sent


def test_stream_events_become_model_events(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(reasoning="Look first.", text="Listing files now.", chunk_chars=5,
                           tool_calls=[ToolCall("f", '{"path": "/tmp", "all": true}', id="call_f"),
                                       ToolCall("g", '{"n": 2}', id="call_g")],
                           native_items=[SHELL_CALL, PATCH_CALL],
                           usage={"input_tokens": 30, "output_tokens": 20, "cached_tokens": 10,
                                  "reasoning_tokens": 5})])
    events = collect(model(upstream), ask())
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Look first."
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Listing files now."
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(s.index, s.call_id, s.name) for s in starts] == [(0, "call_f", "f"), (1, "call_g", "g")]
    arguments = ["".join(e.arguments for e in events if isinstance(e, ToolCallDelta) and e.index == i) for i in (0, 1)]
    assert arguments == ['{"path": "/tmp", "all": true}', '{"n": 2}']
    assert [e.item for e in events if isinstance(e, NativeItem)] == [SHELL_CALL, PATCH_CALL]
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == "tool_calls"
    assert (finish.usage.input_tokens, finish.usage.output_tokens) == (30, 20)
    assert (finish.usage.cached_tokens, finish.usage.reasoning_tokens) == (10, 5)
    assert sum(isinstance(e, Finish) for e in events) == 1


def test_the_upstreams_own_web_search_and_citations_come_through(upstream: ScriptedUpstream,
                                                                 collect: Collect) -> None:
    """``COVE_WEB_SEARCH=upstream``: OpenAI searches itself; its call is relayed whole and its answer's
    ``url_citation``s come with the text they index."""
    search = {"type": "web_search_call", "id": "ws_1", "status": "completed",
              "action": {"type": "search", "query": "pandas"}}
    citation = {"type": "url_citation", "url": "https://pandas.pydata.org/", "title": "pandas",
                "start_index": 7, "end_index": 13}
    upstream.script([Reply(text="Pandas (pandas) 2.2 is out.", native_items=[search], native_first=True,
                           annotations=[citation])])
    events = collect(model(upstream), ask(tools=[{"type": "web_search"}]))
    assert upstream.requests[-1]["tools"] == [{"type": "web_search"}]
    assert [type(e).__name__ for e in events if not isinstance(e, TextDelta)] == [
        "NativeItem", "TextAnnotations", "Finish"]
    assert next(e for e in events if isinstance(e, NativeItem)).item == search
    annotations = next(e for e in events if isinstance(e, TextAnnotations))
    assert (annotations.annotations, annotations.text) == ([citation], "Pandas (pandas) 2.2 is out.")


def test_plain_answer_finishes_with_stop(upstream: ScriptedUpstream, collect: Collect) -> None:
    events = collect(model(upstream), ask())
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "echo: hi"
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"


def test_incomplete_for_max_output_tokens_is_length(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(text="A long story that", finish_reason="length")])
    events = collect(model(upstream), ask(max_output_tokens=5))
    assert isinstance(events[-1], Finish) and events[-1].reason == "length"


def test_failed_response_is_an_upstream_error(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(text="half", stream_error="model crashed")])
    with pytest.raises(UpstreamError, match="model crashed"):
        collect(model(upstream), ask())


def test_stream_without_a_terminal_event(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(text="half", truncate=True)])
    with pytest.raises(UpstreamError, match="before it finished"):
        collect(model(upstream), ask())


def test_http_errors(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(error=(400, "Your input exceeds the context window of this model."))])
    with pytest.raises(ContextWindowExceeded):
        collect(model(upstream), ask())
    upstream.script([Reply(error=(500, "internal trouble"))])
    with pytest.raises(UpstreamError, match="answered 500: internal trouble"):
        collect(model(upstream), ask())
