"""Refusals, reasoning summaries, encrypted reasoning and logprobs as each upstream kind gives them."""

from __future__ import annotations

from cove.upstream.base import (
    Finish,
    ModelRequest,
    ReasoningEnd,
    ReasoningStart,
    ReasoningSummaryDelta,
    RefusalDelta,
    TextDelta,
)
from cove.upstream.chat import ChatCompletionsModel
from cove.upstream.responses import ResponsesApiModel
from tests.scripted_upstream import Reply, ScriptedUpstream
from tests.upstream.conftest import Collect

ENCRYPTED = "reasoning.encrypted_content"
LOGPROBS = "message.output_text.logprobs"


def ask(*include: str) -> ModelRequest:
    return ModelRequest(model="m", input=[{"role": "user", "content": "hi"}], include=list(include))


def test_a_chat_refusal_is_not_text(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(refusal="I won't.")])
    events = collect(ChatCompletionsModel(upstream.url), ask())
    assert "".join(e.text for e in events if isinstance(e, RefusalDelta)) == "I won't."
    assert not [e for e in events if isinstance(e, TextDelta)]


def test_chat_logprobs_only_when_included(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(text="Hi you", logprobs=True), Reply(text="Hi you", logprobs=True)])
    asked = collect(ChatCompletionsModel(upstream.url), ask(LOGPROBS))
    assert upstream.requests[-1]["logprobs"] is True
    assert [entry["token"] for e in asked if isinstance(e, TextDelta) for entry in e.logprobs or []] == ["Hi y", "ou"]
    plain = collect(ChatCompletionsModel(upstream.url), ask())
    assert "logprobs" not in upstream.requests[-1]
    assert all(e.logprobs is None for e in plain if isinstance(e, TextDelta))


def test_responses_reasoning_summary_and_encrypted_content(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(summary=["One.", "Two."], encrypted_content="sealed", refusal="No.")])
    events = collect(ResponsesApiModel(upstream.url), ask(ENCRYPTED, "code_interpreter_call.outputs"))
    assert upstream.requests[-1]["include"] == [ENCRYPTED]  # only what the upstream itself produces
    start = next(e for e in events if isinstance(e, ReasoningStart))
    assert start.item_id.startswith("rs_")
    summaries = [(e.index, e.text) for e in events if isinstance(e, ReasoningSummaryDelta)]
    assert summaries == [(0, "One."), (1, "Two.")]
    assert [e.encrypted_content for e in events if isinstance(e, ReasoningEnd)] == ["sealed"]
    assert "".join(e.text for e in events if isinstance(e, RefusalDelta)) == "No."
    assert isinstance(events[-1], Finish)


def test_responses_without_include_asks_for_nothing(upstream: ScriptedUpstream, collect: Collect) -> None:
    upstream.script([Reply(summary=["One."], encrypted_content="sealed", text="ok")])
    events = collect(ResponsesApiModel(upstream.url), ask())
    assert "include" not in upstream.requests[-1]
    assert [e.encrypted_content for e in events if isinstance(e, ReasoningEnd)] == [None]
