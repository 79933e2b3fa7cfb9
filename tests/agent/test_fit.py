"""Fitting the input to the model's context window (``truncation``), in-process with a scripted model.

The budget of each test is computed with the model's own counts, so the tests pin down which items
are dropped, not what the estimate's constants are."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cove.agent.items import normalize_input
from cove.agent.request import CreateParams
from cove.errors import ContextWindowExceeded
from cove.testing import Reply, ScriptedModel, run_turns
from cove.upstream.base import ModelRequest


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def call(call_id: str) -> list[dict[str, Any]]:
    return [{"type": "function_call", "call_id": call_id, "name": "lookup", "arguments": "{}"},
            {"type": "function_call_output", "call_id": call_id, "output": "x" * 300}]


def tokens(items: list[dict[str, Any]]) -> int:
    """What ``items`` cost the scripted model (its count of a request with no instructions or tools)."""
    count = ScriptedModel().count_items(ModelRequest(model="scripted", input=normalize_input(items)))
    return count.total


def seen(items: list[dict[str, Any]], window: int, truncation: str = "auto") -> list[dict[str, Any]]:
    """The input the model was shown for ``items`` under a context window of ``window`` tokens."""
    model = ScriptedModel([Reply(text="ok")], context_window=window + 100)
    params = CreateParams.model_validate({"model": "scripted", "input": items, "truncation": truncation,
                                          "max_output_tokens": 100})
    asyncio.run(asyncio.wait_for(run_turns(model, params), 30))
    return model.requests[0].input


def texts(items: list[dict[str, Any]]) -> list[str]:
    return [item["content"][0]["text"] if item["type"] == "message" else item["type"] for item in items]


CONVERSATION = [user("first " * 100), {"role": "assistant", "content": "answer one"}, user("second"),
                *call("c1"), {"role": "assistant", "content": "answer two"}, user("third")]


def test_an_input_that_fits_is_sent_whole() -> None:
    assert texts(seen(CONVERSATION, tokens(CONVERSATION))) == texts(normalize_input(CONVERSATION))


def test_auto_drops_the_oldest_user_turns_until_the_rest_fits() -> None:
    kept = seen(CONVERSATION, tokens(CONVERSATION) - 1)
    assert texts(kept) == ["second", "function_call", "function_call_output", "answer two", "third"]


def test_a_tool_result_never_loses_its_call() -> None:
    # Room for the output and what follows, not for its call: the whole turn goes, not half of it.
    window = tokens(CONVERSATION[4:])
    assert window < tokens(CONVERSATION[2:])
    assert texts(seen(CONVERSATION, window)) == ["third"]


def test_without_a_later_user_message_only_the_newest_item_stays() -> None:
    items = [user("question " * 50), *call("c1"), *call("c2")]
    assert texts(seen(items, tokens(items[-1:]))) == ["function_call_output"]


def test_disabled_refuses_an_input_that_does_not_fit() -> None:
    with pytest.raises(ContextWindowExceeded) as refused:
        seen(CONVERSATION, tokens(CONVERSATION) - 1, truncation="disabled")
    assert (refused.value.code, refused.value.param) == ("context_length_exceeded", "input")


def test_auto_refuses_when_the_newest_turn_alone_does_not_fit() -> None:
    with pytest.raises(ContextWindowExceeded) as refused:
        seen(CONVERSATION, tokens(CONVERSATION[-1:]) - 1)
    assert refused.value.code == "context_length_exceeded"


def test_fitting_is_linear_in_the_input() -> None:
    """50,000 one-word messages (~2 MB of JSON): counted once, not once per dropped message (the old
    loop re-serialised the remaining input per drop, ~10^11 bytes of work, minutes)."""
    items = [user(f"w{i}") for i in range(50_000)]
    kept = seen(items, tokens(items[-100:]))
    assert texts(kept) == [f"w{i}" for i in range(49_900, 50_000)]
