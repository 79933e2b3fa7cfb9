"""ChatCompletionsModel against a scripted Chat Completions server over real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest

from cove.errors import ContextWindowExceeded, InvalidRequest, UpstreamError
from cove.upstream.base import (
    Finish,
    ModelEvent,
    ModelRequest,
    NativeItem,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
)
from cove.upstream.chat import ChatCompletionsModel
from cove.upstream.responses import ResponsesApiModel
from tests.polling import eventually_async
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall
from tests.upstream.conftest import Collect, events_of

QUICK_RETRY = {"retry-after-ms": "10"}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": True}


def model(upstream: ScriptedUpstream, **options: Any) -> ChatCompletionsModel:
    return ChatCompletionsModel(upstream.url, **options)


def ask(text: str = "hi", **fields: Any) -> ModelRequest:
    return ModelRequest(model="qwen", input=[{"role": "user", "content": text}], **fields)


def text_of(events: list[ModelEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def finish_of(events: list[ModelEvent]) -> Finish:
    assert isinstance(events[-1], Finish)
    assert sum(isinstance(event, Finish) for event in events) == 1
    return events[-1]


def calls_of(events: list[ModelEvent]) -> list[tuple[str, str, str]]:
    """(call id, name, reassembled arguments) per call, in ToolCallStart order."""
    starts = [event for event in events if isinstance(event, ToolCallStart)]
    assert [start.index for start in starts] == list(range(len(starts)))
    return [(start.call_id, start.name, "".join(event.arguments for event in events
                                                 if isinstance(event, ToolCallDelta) and event.index == start.index))
            for start in starts]


def test_items_become_chat_messages(upstream: ScriptedUpstream, collect: Collect) -> None:
    request = ModelRequest(model="qwen", instructions="Be brief.", input=[
        {"type": "message", "role": "developer", "content": "Use metric units."},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris"},
                                     {"type": "input_text", "text": "and Rome?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "two cities"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_b",
         "output": [{"type": "input_text", "text": "21C"}, {"type": "input_image", "image_url": "data:,"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "No more."}]},
    ])
    collect(model(upstream), request)
    assert upstream.requests[-1]["messages"] == [
        {"role": "system", "content": "Be brief.\n\nUse metric units."},  # templates take one system message
        {"role": "user", "content": "Weather in Paris\nand Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "21C\n[input_image omitted]"},
        {"role": "assistant", "content": "No more."},
    ]


def test_unknown_item_type_is_refused_before_any_request(upstream: ScriptedUpstream, collect: Collect) -> None:
    request = ModelRequest(model="qwen", input=[{"type": "shell_call", "call_id": "c", "action": {}}])
    with pytest.raises(InvalidRequest) as caught:
        collect(model(upstream), request)
    assert caught.value.param == "input[0].type"
    assert "shell_call" in caught.value.message
    assert upstream.requests == []


def test_streamed_text_and_upstream_usage(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(text="Hello from the streaming upstream!", chunk_chars=5,
                           usage={"input_tokens": 12, "output_tokens": 7, "cached_tokens": 4, "reasoning_tokens": 2})])
    events = collect(model(upstream), ask())
    assert sum(isinstance(event, TextDelta) for event in events) == 7
    assert text_of(events) == "Hello from the streaming upstream!"
    finish = finish_of(events)
    assert finish.reason == "stop"
    assert (finish.usage.input_tokens, finish.usage.output_tokens) == (12, 7)
    assert (finish.usage.cached_tokens, finish.usage.reasoning_tokens) == (4, 2)
    sent = upstream.requests[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "qwen"


def test_parallel_tool_calls_are_reassembled(upstream: ScriptedUpstream, collect: Collect) -> None:
    paris, rome = '{"city": "Paris", "unit": "celsius"}', '{"city": "Rome", "unit": "celsius"}'
    upstream.script([Reply(text="Let me check.", chunk_chars=3, tool_calls=[
        ToolCall("get_weather", paris, id="call_p"), ToolCall("get_weather", rome, id="call_r")])])
    events = collect(model(upstream), ask(tools=[WEATHER], tool_choice="required", parallel_tool_calls=True))
    assert calls_of(events) == [("call_p", "get_weather", paris), ("call_r", "get_weather", rome)]
    assert sum(isinstance(event, ToolCallDelta) for event in events) > 4
    assert text_of(events) == "Let me check."
    assert finish_of(events).reason == "tool_calls"
    sent = upstream.requests[-1]
    function = {"name": "get_weather", "description": "Weather for a city", "parameters": WEATHER["parameters"],
                "strict": True}
    assert sent["tools"] == [{"type": "function", "function": function}]
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("required", True)


def test_missing_call_ids_are_generated(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(omit_call_ids=True, tool_calls=[ToolCall("a", "{}"), ToolCall("b", '{"x": 1}')])])
    calls = calls_of(collect(model(upstream), ask(tools=[WEATHER])))
    assert [(name, arguments) for _, name, arguments in calls] == [("a", "{}"), ("b", '{"x": 1}')]
    ids = [call_id for call_id, _, _ in calls]
    assert all(call_id.startswith("call_") for call_id in ids) and len(set(ids)) == 2


def test_calls_told_apart_by_id_alone(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(calls_at_index_zero=True, chunk_chars=2, finish_reason="stop", tool_calls=[
        ToolCall("a", '{"n": 1}', id="call_1"), ToolCall("b", '{"n": 2}', id="call_2")])])
    events = collect(model(upstream), ask(tools=[WEATHER]))
    assert calls_of(events) == [("call_1", "a", '{"n": 1}'), ("call_2", "b", '{"n": 2}')]
    assert finish_of(events).reason == "tool_calls"  # though the upstream said "stop"


@pytest.mark.parametrize(("upstream_reason", "reason"), [("length", "length"), ("content_filter", "content_filter"),
                                                         ("function_call", "tool_calls"), ("stop", "stop")])
def test_finish_reasons(upstream: ScriptedUpstream, collect: Collect, upstream_reason: str, reason: str) -> None:
    upstream.script([Reply(text="cut sh", finish_reason=upstream_reason)])
    assert finish_of(collect(model(upstream), ask())).reason == reason


def test_tool_choice_forms(upstream: ScriptedUpstream, collect: Collect) -> None:
    other = {**WEATHER, "name": "get_time"}
    collect(model(upstream), ask(tools=[WEATHER, other], tool_choice={"type": "function", "name": "get_time"}))
    assert upstream.requests[-1]["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    collect(model(upstream), ask(tools=[WEATHER, other], tool_choice={
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]}))
    sent = upstream.requests[-1]
    assert sent["tool_choice"] == "required"
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_time"]
    collect(model(upstream), ask(tool_choice="none", parallel_tool_calls=False))
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & upstream.requests[-1].keys()


def test_usage_is_estimated_when_the_upstream_sends_none(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(text="word " * 30, omit_usage=True)])
    usage = finish_of(collect(model(upstream), ask("a question of some length"))).usage
    assert usage.input_tokens > 0
    assert 20 <= usage.output_tokens <= 100


def test_image_input(upstream: ScriptedUpstream, collect: Collect) -> None:
    picture = "data:image/png;base64,iVBORw0KGgo="
    collect(model(upstream), ModelRequest(model="qwen", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": picture, "detail": "low"},
        {"type": "input_image", "image_url": "http://127.0.0.1:9/cat.jpg"}]}]))
    assert upstream.requests[-1]["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": picture, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.jpg"}}]}]


def test_image_by_file_id_is_refused(upstream: ScriptedUpstream, collect: Collect) -> None:
    with pytest.raises(InvalidRequest, match="input_image"):
        collect(model(upstream), ModelRequest(model="qwen", input=[{"role": "user", "content": [
            {"type": "input_image", "file_id": "file_1"}]}]))


def test_formats_and_sampling_options(upstream: ScriptedUpstream, collect: Collect) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    upstream.script([Reply(text='{"n": 3}')])
    text_format = {"type": "json_schema", "name": "count", "schema": schema, "strict": True}
    events = collect(model(upstream), ask(text_format=text_format, max_output_tokens=50, temperature=0.2, top_p=0.9,
                                          reasoning={"effort": "low"}))
    assert json.loads(text_of(events)) == {"n": 3}
    sent = upstream.requests[-1]
    assert sent["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "count", "schema": schema, "strict": True}}
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["reasoning_effort"]) == (50, 0.2, 0.9, "low")
    collect(model(upstream), ask(text_format={"type": "json_object"}))
    assert upstream.requests[-1]["response_format"] == {"type": "json_object"}
    collect(model(upstream), ask(text_format={"type": "text"}))
    assert not {"response_format", "max_tokens", "reasoning_effort", "temperature"} & upstream.requests[-1].keys()


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_deltas(upstream: ScriptedUpstream, collect: Collect, field: str) -> None:
    upstream.script([Reply(reasoning="First, think hard.", reasoning_field=field, text="42")])
    events = collect(model(upstream), ask())
    assert "".join(event.text for event in events if isinstance(event, ReasoningDelta)) == "First, think hard."
    assert text_of(events) == "42"
    assert not any(isinstance(event, NativeItem) for event in events)


def test_retries_after_503(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(error=(503, "overloaded"), headers=QUICK_RETRY),
                     Reply(error=(503, "overloaded"), headers=QUICK_RETRY), Reply(text="finally")])
    assert text_of(collect(model(upstream), ask())) == "finally"
    assert len(upstream.requests) == 3


def test_gives_up_after_three_retries(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(error=(503, "overloaded"), headers=QUICK_RETRY)] * 5)
    with pytest.raises(UpstreamError) as caught:
        collect(model(upstream), ask())
    assert "503" in caught.value.message and "overloaded" in caught.value.message
    assert len(upstream.requests) == 4


def test_upstream_down() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # bound, never listening: refused
        down = ChatCompletionsModel(url, max_retries=0)
        with pytest.raises(UpstreamError) as caught:
            asyncio.run(events_of(down, ask()))
    assert caught.value.message.startswith(f"The model upstream at {url} could not be reached")
    assert caught.value.status_code == 502


def test_context_length_error(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(error=(400, "This model's maximum context length is 8192 tokens. However, you "
                                       "requested 9100 tokens (9000 in the messages, 100 in the completion)."))])
    with pytest.raises(ContextWindowExceeded) as caught:
        collect(model(upstream), ask())
    assert caught.value.param == "input" and caught.value.code == "context_length_exceeded"
    assert "maximum context length is 8192" in caught.value.message


def test_other_400_keeps_the_upstreams_words(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(error=(400, "Invalid schema for response_format 'count'"))])
    with pytest.raises(UpstreamError, match=r"answered 400: Invalid schema for response_format 'count'"):
        collect(model(upstream), ask())
    assert len(upstream.requests) == 1


def test_refused_stream_options_are_dropped_once(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.reject_params = {"stream_options"}
    upstream.script([Reply(text="no usage here")])
    events = collect(model(upstream), ask())
    assert text_of(events) == "no usage here"
    assert finish_of(events).usage.output_tokens > 0  # estimated
    assert ["stream_options" in sent for sent in upstream.requests] == [True, False]


def test_the_prompt_cache_key_goes_along_unless_the_upstream_refuses_it(upstream: ScriptedUpstream,
                                                                       collect: Collect) -> None:
    request = ModelRequest(model="qwen", input=[{"role": "user", "content": "hi"}], prompt_cache_key="thread-1")
    collect(model(upstream), request)
    assert upstream.requests[-1]["prompt_cache_key"] == "thread-1"
    upstream.reject_params = {"prompt_cache_key"}
    upstream.script([Reply(text="still here")])
    assert text_of(collect(model(upstream), request)) == "still here"
    assert ["prompt_cache_key" in sent for sent in upstream.requests[1:]] == [True, False]


def test_refused_max_tokens_becomes_max_completion_tokens(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(error=(400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                       "Use 'max_completion_tokens' instead.")), Reply(text="ok")])
    assert text_of(collect(model(upstream), ask(max_output_tokens=64))) == "ok"
    first, second = upstream.requests
    assert first["max_tokens"] == 64 and "max_completion_tokens" not in first
    assert second["max_completion_tokens"] == 64 and "max_tokens" not in second


def test_upstream_that_cannot_stream_tools_is_asked_without_streaming(upstream: ScriptedUpstream,
                                                                      collect: Collect) -> None:
    upstream.reject_stream_with_tools = True
    upstream.script([Reply(text="Checking.", reasoning="need weather", tool_calls=[
        ToolCall("get_weather", '{"city": "Oslo"}', id="call_o"), ToolCall("get_weather", "{}", id="call_x")])])
    events = collect(model(upstream), ask(tools=[WEATHER]))
    assert calls_of(events) == [("call_o", "get_weather", '{"city": "Oslo"}'), ("call_x", "get_weather", "{}")]
    assert text_of(events) == "Checking."
    assert isinstance(events[0], ReasoningDelta)
    finish = finish_of(events)
    assert finish.reason == "tool_calls" and finish.usage.input_tokens > 0
    assert [sent.get("stream", False) for sent in upstream.requests] == [True, False]


def test_error_in_the_middle_of_the_stream(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(text="partial answer", stream_error="the GPU fell over")])
    with pytest.raises(UpstreamError, match="the GPU fell over"):
        collect(model(upstream), ask())


def test_malformed_chunks_are_read_field_by_field(upstream: ScriptedUpstream, collect: Collect) -> None:
    """Chunks are read as plain JSON, not the SDK's models: a field of the wrong type is skipped, never a crash."""
    junk = [[1, 2], "text", {"choices": "none"}, {"usage": "lots", "choices": [
        {"index": 0, "delta": {"content": 5, "refusal": ["x"], "tool_calls": "no", "reasoning": {}},
         "logprobs": {"content": "bad"}, "finish_reason": 7}, "not a choice"]}]
    upstream.script([Reply(text="still fine", junk_chunks=junk)])
    events = collect(model(upstream), ask())
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "still fine"
    assert events[-1] == Finish("stop", events[-1].usage)


def test_stream_that_ends_without_finishing(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(text="never ends", truncate=True)])
    with pytest.raises(UpstreamError, match="ended the answer before it finished"):
        collect(model(upstream), ask())


def test_api_key_is_sent(collect: Collect) -> None:
    guarded = ScriptedUpstream(api_key="sk-local-test").start()
    try:
        with pytest.raises(UpstreamError, match="answered 401"):
            collect(ChatCompletionsModel(guarded.url, "wrong"), ask())
        assert text_of(collect(ChatCompletionsModel(guarded.url, "sk-local-test"), ask("ping"))) == "echo: ping"
        assert guarded.received[-1].headers["authorization"] == "Bearer sk-local-test"
    finally:
        guarded.stop()


def test_a_scripted_reply_can_depend_on_the_request(upstream: ScriptedUpstream, collect: Collect) -> None:
    def weather_or_call(body: dict[str, Any]) -> Reply:
        tool_results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if tool_results:
            return Reply(text=f"It is {tool_results[0]}.")
        return Reply(tool_calls=[ToolCall("get_weather", '{"city": "Paris"}', id="call_1")])

    upstream.script([weather_or_call, weather_or_call])
    first = collect(model(upstream), ask(tools=[WEATHER]))
    assert calls_of(first) == [("call_1", "get_weather", '{"city": "Paris"}')]
    request = ask(tools=[WEATHER])
    request.input += [{"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
                      {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]
    assert text_of(collect(model(upstream), request)) == "It is sunny."


def test_concurrent_streams(upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="a" * 40, chunk_delay=0.02), Reply(text="b" * 40, chunk_delay=0.02)])

    async def both() -> list[list[ModelEvent]]:
        shared = model(upstream)
        try:
            return list(await asyncio.gather(events_of(shared, ask()), events_of(shared, ask())))
        finally:
            await shared.aclose()

    started = time.monotonic()
    results = asyncio.run(both())
    assert sorted(text_of(events) for events in results) == ["a" * 40, "b" * 40]
    # Each stream sleeps 13 x 0.02 s (role, 10 text chunks, finish, usage): one after the other takes 0.52 s.
    assert time.monotonic() - started < 0.45


@pytest.mark.parametrize("kind", ["chat", "responses"])
def test_a_consumer_that_stops_early_hangs_up_on_the_upstream(upstream: ScriptedUpstream, kind: str) -> None:
    upstream.script([Reply(text="word " * 200, chunk_delay=0.02)])

    async def abandoned_before_client_closes() -> int:
        shared = model(upstream) if kind == "chat" else ResponsesApiModel(upstream.url)
        stream = shared.stream(ask())
        try:
            assert isinstance(await anext(stream), TextDelta)
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator underneath
            await eventually_async(lambda: upstream.abandoned, timeout=5,
                                   what="the upstream to see its stream abandoned")
            return upstream.abandoned
        finally:
            await shared.aclose()

    assert asyncio.run(abandoned_before_client_closes()) == 1
