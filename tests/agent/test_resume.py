"""Reading a response's output back from its stored stream events, as a resume after a restart does."""

from __future__ import annotations

from typing import Any

from cove.agent.resume import replay


def _added(index: int, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "response.output_item.added", "output_index": index, "item": item}


def _done(index: int, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "response.output_item.done", "output_index": index, "item": item}


def test_replay_keeps_finished_items_and_what_streamed_into_a_cut_off_message() -> None:
    call = {"id": "sh_1", "type": "shell_call", "call_id": "c1", "status": "in_progress"}
    finished = {**call, "status": "completed"}
    running = {"id": "sho_1", "type": "shell_call_output", "call_id": "c1", "status": "in_progress", "output": []}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    events = [
        {"type": "response.created"}, _added(0, call), _done(0, finished), _added(1, running),
        {"type": "response.shell_call_output_content.delta", "output_index": 1, "delta": {"stdout": "x"}},
        _done(1, {**running, "status": "completed", "output": [{"stdout": "x"}]}),
        _added(2, message),
        {"type": "response.content_part.added", "output_index": 2, "content_index": 0,
         "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", "output_index": 2, "content_index": 0, "delta": "hal"},
        {"type": "response.output_text.delta", "output_index": 2, "content_index": 0, "delta": "f"},
        _added(3, {**running, "id": "sho_2", "call_id": "c2"}),
    ]
    output, cut = replay(events)
    assert [item["id"] for item in output] == ["sh_1", "sho_1", "msg_1", "sho_2"]
    assert output[0]["status"] == "completed" and output[1]["output"] == [{"stdout": "x"}]
    assert output[2]["content"][0]["text"] == "half"
    assert cut == {2, 3}


def test_replay_of_no_events_is_no_output() -> None:
    assert replay([]) == ([], set())
