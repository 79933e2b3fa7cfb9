"""The computer tool in the agent loop, in-process: a scripted model and an in-memory display
(``cove.testing``) stand in for the upstream and the desktop container. Real Chromium in a real
container drives the same paths in tests/tools/test_computer.py."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from cove.agent.request import CreateParams
from cove.errors import InvalidRequest
from cove.sandbox.linux.display import png_size
from cove.testing import Call, MemorySandbox, MemoryWorkspace, Reply, ScriptedModel, run_turns
from cove.tools.toolbox import Toolbox
from cove.upstream.base import ModelRequest
from cove.upstream.chat import to_messages

PREVIEW = {"type": "computer_use_preview", "display_width": 800, "display_height": 600, "environment": "browser",
           "container": "auto"}
CLICK = {"type": "click", "x": 10, "y": 20, "button": "left"}
CHECK = {"id": "cu_sc_1", "code": "malicious_instructions", "message": "The page asks for a password."}


def respond(model: ScriptedModel, workspace: MemoryWorkspace | None, tools: list[dict[str, Any]],
            input: Any = "go", history: list[dict[str, Any]] | None = None
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    request = CreateParams.model_validate({"model": "scripted", "input": input, "tools": tools})
    return asyncio.run(asyncio.wait_for(run_turns(model, request, workspace, history=history), 10))


def desktop() -> tuple[MemorySandbox, MemoryWorkspace]:
    sandbox = MemorySandbox(desktop=True)
    return sandbox, MemoryWorkspace(sandbox)


def screenshot(item: dict[str, Any]) -> bytes:
    url = item["output"]["image_url"]
    assert url.startswith("data:image/png;base64,")
    return base64.b64decode(url.split(",", 1)[1])


def test_a_hosted_call_is_performed_and_its_screenshot_read_back_by_a_chat_model() -> None:
    sandbox, workspace = desktop()
    model = ScriptedModel([Reply(calls=[Call("computer", CLICK)]),
                           Reply(calls=[Call("computer", {"type": "type", "text": "hello"})]), Reply(text="done")])
    response, events = respond(model, workspace, [PREVIEW])
    assert response["status"] == "completed"
    assert [i["type"] for i in response["output"]] == ["computer_call", "computer_call_output"] * 2 + ["message"]
    call, output = response["output"][:2]
    assert call["action"] == CLICK and call["pending_safety_checks"] == [] and call["status"] == "completed"
    assert output["call_id"] == call["call_id"] and output["status"] == "completed"
    first, second = screenshot(output), screenshot(response["output"][3])
    assert png_size(first) == (800, 600) and first != second
    assert sandbox.screen is not None and sandbox.screen.screen.width == 800
    assert sandbox.screen.batches == [[CLICK], [{"type": "type", "text": "hello"}]]
    # Streamed as it happened: the call (added, done) before its output.
    kinds = [(e["type"], e["item"]["type"]) for e in events if e["type"].startswith("response.output_item")]
    assert kinds[:4] == [("response.output_item.added", "computer_call"),
                         ("response.output_item.done", "computer_call"),
                         ("response.output_item.added", "computer_call_output"),
                         ("response.output_item.done", "computer_call_output")]
    # The chat model got a function, and reads the screenshot as a user message's image after the tool result.
    assert model.requests[0].tools[0]["name"] == "computer" and "800x600" in model.requests[0].tools[0]["description"]
    messages = to_messages(model.requests[1])
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    assert messages[1]["tool_calls"][0]["function"]["name"] == "computer"
    image = messages[3]["content"][1]
    assert image["type"] == "image_url" and image["image_url"]["url"] == output["output"]["image_url"]


def test_a_responses_upstream_gets_the_tool_natively_and_batches_run_in_one_call() -> None:
    sandbox, workspace = desktop()
    native = {"type": "computer_call", "id": "cu_up", "call_id": "call_n", "status": "completed",
              "pending_safety_checks": [], "actions": [CLICK, {"type": "keypress", "keys": ["CTRL", "L"]}]}
    model = ScriptedModel([Reply(native_items=[native]), Reply(text="ok")], native_tools=True)
    response, _ = respond(model, workspace, [{"type": "computer", "container": "auto"}])
    assert response["status"] == "completed"
    assert model.requests[0].tools == [{"type": "computer"}]
    assert sandbox.screen is not None
    assert sandbox.screen.batches == [[CLICK, {"type": "keypress", "keys": ["CTRL", "L"]}]]
    assert response["output"][0]["actions"] == native["actions"]
    sent = model.requests[1].input
    assert [i["type"] for i in sent[-2:]] == ["computer_call", "computer_call_output"]
    assert sent[-1]["output"]["image_url"].startswith("data:image/png;base64,")


def test_the_preview_tool_is_offered_natively_without_the_extension() -> None:
    model = ScriptedModel([Reply(text="ok")], native_tools=True)
    respond(model, desktop()[1], [PREVIEW])
    assert model.requests[0].tools == [{"type": "computer_use_preview", "display_width": 800, "display_height": 600,
                                        "environment": "browser"}]


def test_client_side_by_default_the_call_ends_the_response() -> None:
    model = ScriptedModel([Reply(calls=[Call("computer", CLICK, call_id="call_c")])])
    response, _ = respond(model, None, [{k: v for k, v in PREVIEW.items() if k != "container"}])
    assert response["status"] == "completed"
    assert response["output"] == [{"id": response["output"][0]["id"], "type": "computer_call", "call_id": "call_c",
                                   "action": CLICK, "pending_safety_checks": [], "status": "completed"}]
    # The client's screenshot continues the chain: the chat model reads it as an image.
    answer = {"type": "computer_call_output", "call_id": "call_c",
              "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,AAAA"}}
    model = ScriptedModel([Reply(text="seen")])
    response, _ = respond(model, None, [{k: v for k, v in PREVIEW.items() if k != "container"}], input=[answer],
                          history=response["output"])
    assert response["output"][-1]["content"][0]["text"] == "seen"
    messages = to_messages(model.requests[0])
    assert [m["role"] for m in messages] == ["assistant", "tool", "user"]
    assert messages[2]["content"][1]["image_url"]["url"] == "data:image/png;base64,AAAA"


def test_beside_a_hosted_shell_the_computer_is_hosted_in_the_same_container() -> None:
    toolbox = Toolbox([{"type": "shell", "environment": {"type": "container_auto"}},
                       {"type": "computer_use_preview", "display_width": 1024, "display_height": 768,
                        "environment": "linux"}])
    assert toolbox.hosted("computer") is not None and toolbox.display_param == "tools[1]"
    assert toolbox.environment() == {"type": "container_auto"}
    client = Toolbox([{"type": "shell", "environment": {"type": "local"}}, {"type": "computer"}])
    assert client.hosted("computer") is None and client.display_param is None


def test_a_pending_safety_check_stops_the_loop_until_acknowledged() -> None:
    sandbox, workspace = desktop()
    held = {"type": "computer_call", "id": "cu_up", "call_id": "call_h", "status": "completed",
            "pending_safety_checks": [CHECK], "action": CLICK}
    model = ScriptedModel([Reply(native_items=[held])], native_tools=True)
    first, _ = respond(model, workspace, [PREVIEW])
    assert first["status"] == "completed"
    assert [i["type"] for i in first["output"]] == ["computer_call"]
    assert first["output"][-1]["pending_safety_checks"] == [CHECK] and first["output"][-1]["status"] == "completed"
    assert sandbox.screen is None  # nothing was performed

    def wrong(checks: list[dict[str, Any]]) -> InvalidRequest:
        answer = {"type": "computer_call_output", "call_id": "call_h", "acknowledged_safety_checks": checks,
                  "output": {"type": "computer_screenshot"}}
        with pytest.raises(InvalidRequest) as info:
            respond(ScriptedModel([]), workspace, [PREVIEW], input=[answer], history=first["output"])
        return info.value

    assert wrong([]).param == "input[0].acknowledged_safety_checks"
    assert "cu_sc_1" in wrong([{"id": "cu_sc_other"}]).message
    assert sandbox.screen is None

    answer = {"type": "computer_call_output", "call_id": "call_h", "acknowledged_safety_checks": [CHECK],
              "output": {"type": "computer_screenshot"}}
    model = ScriptedModel([Reply(text="went on")], native_tools=True)
    second, _ = respond(model, workspace, [PREVIEW], input=[answer], history=first["output"])
    assert second["status"] == "completed"
    assert [i["type"] for i in second["output"]] == ["computer_call_output", "message"]
    performed = second["output"][0]
    assert performed["call_id"] == "call_h" and performed["acknowledged_safety_checks"] == [CHECK]
    assert png_size(screenshot(performed)) == (800, 600)
    assert sandbox.screen is not None and sandbox.screen.batches == [[CLICK]]
    # The model sees the call once answered: Cove's output (with the screenshot) replaces the acknowledgement.
    outputs = [i for i in model.requests[0].input if i["type"] == "computer_call_output"]
    assert len(outputs) == 1 and outputs[0]["output"]["image_url"] == performed["output"]["image_url"]
    # An acknowledgement sent again performs nothing twice: later in the chain, or by a stateless client
    # that sends the whole history as input.
    history = [*first["output"], answer, *second["output"]]
    respond(ScriptedModel([Reply(text="again")], native_tools=True), workspace, [PREVIEW],
            input=[{**answer, "id": "cuo_again"}], history=history)
    respond(ScriptedModel([Reply(text="again")], native_tools=True), workspace, [PREVIEW], input=history)
    assert sandbox.screen.batches == [[CLICK]]


def test_actions_that_do_not_fit_are_refused_and_the_model_reads_why() -> None:
    sandbox, workspace = desktop()
    model = ScriptedModel([Reply(calls=[Call("computer", {"type": "click", "x": "left"})]),
                           Reply(calls=[Call("computer", {"type": "keypress", "keys": ["CTRL"]}),
                                        Call("computer", {"type": "teleport"})]),
                           Reply(text="gave up")])
    response, _ = respond(model, workspace, [PREVIEW])
    assert response["status"] == "completed"
    outputs = [i for i in response["output"] if i["type"] == "computer_call_output"]
    assert {o["call_id"]: o["status"] for o in outputs} == {"call_1_0": "failed", "call_2_0": "completed",
                                                            "call_2_1": "failed"}
    assert sandbox.screen is not None and sandbox.screen.batches == [[{"type": "keypress", "keys": ["CTRL"]}]]
    tool_texts = [m["content"] for m in to_messages(model.requests[1]) if m["role"] == "tool"]
    assert tool_texts[0].startswith("Failed:")


def test_a_container_without_a_display_refuses_the_call() -> None:
    model = ScriptedModel([Reply(calls=[Call("computer", CLICK)])])
    request = CreateParams.model_validate({"model": "scripted", "input": "go", "tools": [PREVIEW]})
    with pytest.raises(InvalidRequest) as info:
        asyncio.run(run_turns(model, request, MemoryWorkspace(MemorySandbox())))
    assert info.value.code == "no_display"


@pytest.mark.parametrize(("tool", "param"), [
    ({**PREVIEW, "display_width": 10}, "tools[0].display_width"),
    ({**PREVIEW, "display_height": 100_000}, "tools[0].display_height"),
    ({**PREVIEW, "environment": "amiga"}, "tools[0].environment"),
    ({"type": "computer", "display_width": 800}, "tools[0].display_width"),
    ({"type": "computer", "container": {"type": "auto", "memory_limit": "3g"}}, "tools[0].container.memory_limit"),
])
def test_tool_entries_that_do_not_fit_are_refused(tool: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        CreateParams.model_validate({"model": "m", "input": "x", "tools": [tool]}).check()
    assert info.value.param == param


def test_the_chat_request_carries_the_image_after_the_tool_message() -> None:
    items = [{"type": "computer_call", "call_id": "c1", "action": CLICK, "pending_safety_checks": []},
             {"type": "computer_call_output", "call_id": "c1",
              "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,QQ=="}}]
    request = ModelRequest(model="m", input=Toolbox.as_model_context(items))
    messages = to_messages(request)
    assert messages[1] == {"role": "tool", "tool_call_id": "c1", "content": messages[1]["content"]}
    assert messages[2]["role"] == "user" and messages[2]["content"][1]["image_url"]["url"].endswith("QQ==")


def test_a_chat_model_sees_the_newest_three_screenshots_as_images() -> None:
    items: list[dict[str, Any]] = []
    for number in range(5):
        items += [{"type": "computer_call", "call_id": f"c{number}", "action": CLICK, "pending_safety_checks": []},
                  {"type": "computer_call_output", "call_id": f"c{number}",
                   "output": {"type": "computer_screenshot", "image_url": f"data:image/png;base64,{number}"}}]
    messages = to_messages(ModelRequest(model="m", input=Toolbox.as_model_context(items)))
    images = [part["image_url"]["url"] for m in messages if m["role"] == "user" for part in m["content"]
              if part["type"] == "image_url"]
    assert images == [f"data:image/png;base64,{number}" for number in (2, 3, 4)]
    assert len([m for m in messages if m["role"] == "tool"]) == 5
