"""``context_management`` compaction inside the loop, in-process: between hosted tool turns, where a server
test would need a container (the end-to-end tests are tests/responses/test_compaction.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from cove.agent.builder import ResponseBuilder
from cove.agent.compaction import SUMMARY_HEADER, SUMMARY_PROMPT, Compactor, window
from cove.agent.items import normalize_input
from cove.agent.loop import Turn, run_response
from cove.agent.request import CreateParams
from cove.agent.response_object import new_response
from cove.errors import UpstreamError
from cove.sandbox.base import CommandOutput, ExitOutcome
from cove.testing import Call, MemorySandbox, MemoryWorkspace, Reply, ScriptedModel
from cove.upstream.base import ModelRequest, Usage

SHELL = {"type": "shell", "environment": {"type": "container_auto"}}


def run(model: ScriptedModel, threshold: int | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The response and its events; a run that raised (as a failing upstream makes it) ends with an
    ``error`` event naming the exception, which the service would turn into ``response.failed``."""
    params = CreateParams.model_validate({"model": "scripted", "input": "Count the files.", "tools": [SHELL],
                                          "context_management": [{"type": "compaction",
                                                                  "compact_threshold": threshold}]})
    params.check()
    response = new_response("resp_test", params)
    events: list[dict[str, Any]] = []

    async def collect(event: dict[str, Any]) -> None:
        events.append(event)

    compactor = Compactor.of(params, lambda summary: f"sealed({summary})", None)
    listing = CommandOutput(stdout="file\n" * 200, stderr="", outcome=ExitOutcome(exit_code=0))
    sandbox = MemorySandbox(run=lambda command: listing)
    turn = Turn(model, "scripted", params, normalize_input(params.input), params.toolbox,
                MemoryWorkspace(sandbox), compactor=compactor)
    try:
        asyncio.run(asyncio.wait_for(run_response(turn, ResponseBuilder(response, collect)), 10))
    except UpstreamError as exc:
        events.append({"type": "error", "message": exc.message})
    return response, events


def _text(item: dict[str, Any]) -> str:
    return "".join(part["text"] for part in item["content"])


def test_a_run_compacts_between_hosted_turns_and_goes_on() -> None:
    def answer(request: ModelRequest) -> Reply:
        assert [(item["role"], _text(item)) for item in request.input] == [
            ("user", "Count the files."), ("user", SUMMARY_HEADER + "SUMMARY: ls printed 200 files.")]
        return Reply(text="200 files.")

    model = ScriptedModel([Reply(calls=[Call("shell", {"commands": ["ls"]})]),
                           Reply(text="SUMMARY: ls printed 200 files.", usage=Usage(300, 7)), answer])
    response, events = run(model, threshold=100)

    assert [item["type"] for item in response["output"]] == ["shell_call", "shell_call_output", "compaction",
                                                             "message"]
    assert response["output"][2]["encrypted_content"] == "sealed(SUMMARY: ls printed 200 files.)"
    summarising = model.requests[1]
    assert summarising.tools == [] and _text(summarising.input[-1]) == SUMMARY_PROMPT
    assert [item["type"] for item in summarising.input[:-1]] == ["message", "function_call", "function_call_output"]
    assert response["usage"]["input_tokens"] == 10 + 300 + 10  # the summary's tokens are the response's too
    grammar = [(e["type"], e.get("output_index")) for e in events if e.get("output_index") == 2]
    assert grammar == [("response.output_item.added", 2), ("response.compaction.compacting", 2),
                       ("response.output_item.done", 2)]


def test_below_the_threshold_nothing_is_compacted() -> None:
    model = ScriptedModel([Reply(calls=[Call("shell", {"commands": ["ls"]})]), Reply(text="200 files.")])
    response, _ = run(model, threshold=None)  # near the window only: 8192 tokens are far away
    assert [item["type"] for item in response["output"]] == ["shell_call", "shell_call_output", "message"]


def test_a_failed_summary_leaves_no_compaction_item() -> None:
    def refuse(request: ModelRequest) -> Reply:
        raise UpstreamError("the upstream is down")

    model = ScriptedModel([Reply(calls=[Call("shell", {"commands": ["ls"]})]), refuse])
    response, events = run(model, threshold=100)
    assert events[-1] == {"type": "error", "message": "the upstream is down"}
    assert [item["type"] for item in response["output"]] == ["shell_call", "shell_call_output"]


def test_the_latest_compaction_item_rules_the_window() -> None:
    items = [{"type": "message", "role": "user", "content": "a", "id": "u1"},
             {"type": "message", "role": "assistant", "content": "b", "id": "m1"},
             {"type": "compaction", "id": "cmp_1", "encrypted_content": "one"},
             {"type": "message", "role": "user", "content": "c", "id": "u2"},
             {"type": "function_call", "call_id": "x", "name": "f", "arguments": "{}", "id": "fc1"},
             {"type": "compaction", "id": "cmp_2", "encrypted_content": "two"},
             {"type": "message", "role": "assistant", "content": "d", "id": "m2"}]
    context, summary = window(items, lambda item: f"summary {item['encrypted_content']}")
    assert [item["id"] for item in context] == ["u1", "u2", "cmp_2", "m2"]
    assert summary is context[2] and _text(summary) == SUMMARY_HEADER + "summary two"
    assert window(items[:2], lambda item: "") == (items[:2], None)
