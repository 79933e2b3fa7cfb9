"""The agent loop in-process, in milliseconds and without root: a scripted model (``cove.testing``) and
an in-memory container stand in for the upstream and the sandbox. The same behaviours run end to end
against a real server in tests/tools and tests/responses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from cove.agent.request import CreateParams
from cove.sandbox.base import Command, CommandOutput, ExitOutcome
from cove.testing import Call, MemoryFiles, MemorySandbox, MemoryWorkspace, Reply, ScriptedModel, run_turns
from cove.upstream.base import ModelRequest

SHELL = {"type": "shell", "environment": {"type": "container_auto"}}


def respond(model: ScriptedModel, workspace: MemoryWorkspace | None = None, max_turns: int = 50,
            **params: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    request = CreateParams.model_validate({"model": "scripted", "input": "go", **params})
    return asyncio.run(asyncio.wait_for(run_turns(model, request, workspace, max_turns=max_turns), 10))


def output(result: str, code: int = 0) -> CommandOutput:
    return CommandOutput(stdout=result, stderr="", outcome=ExitOutcome(exit_code=code))


def types(response: dict[str, Any]) -> list[str]:
    return [item["type"] for item in response["output"]]


def test_text_streams_and_completes() -> None:
    response, events = respond(ScriptedModel([Reply(text="Hello there, world")]))
    assert response["status"] == "completed"
    assert response["output"][0]["content"][0]["text"] == "Hello there, world"
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == "Hello there, world"
    assert events[-1]["type"] == "response.completed"
    assert response["usage"]["input_tokens"] == 10


def test_a_shell_call_runs_in_the_container_and_the_model_reads_its_result() -> None:
    sandbox = MemorySandbox(run=lambda command: output(f"ran {command.command}\n"))

    def answer(request: ModelRequest) -> Reply:
        call, result = request.input[-2:]
        assert (call["type"], call["name"]) == ("function_call", "shell")
        assert result["type"] == "function_call_output" and "ran echo hi" in result["output"]
        return Reply(text="It said hi.")

    model = ScriptedModel([Reply(calls=[Call("shell", {"commands": ["echo hi"]})]), answer])
    response, events = respond(model, MemoryWorkspace(sandbox), tools=[SHELL])
    assert types(response) == ["shell_call", "shell_call_output", "message"]
    assert response["output"][0]["environment"] == {"type": "container_reference", "container_id": "cntr_memory"}
    assert response["output"][1]["output"][0]["stdout"] == "ran echo hi\n"
    assert [command.command for command in sandbox.commands] == ["echo hi"]
    grammar = [e["type"] for e in events if e["type"].startswith("response.shell_call")]
    assert grammar == ["response.shell_call_command.added", "response.shell_call_command.delta",
                       "response.shell_call_command.done", "response.shell_call_output_content.delta",
                       "response.shell_call_output_content.done"]
    assert model.requests[0].tools[0]["name"] == "shell"  # a chat model sees the hosted tool as a function


def test_queued_steering_ends_the_response_after_its_hosted_tools() -> None:
    """Steered input does not join the running response: once its hosted tools have run, before the
    next model turn, it ends incomplete (``steered``) for the connection's successor to continue."""
    sandbox = MemorySandbox(run=lambda command: output("done\n"))
    model = ScriptedModel([Reply(calls=[Call("shell", {"commands": ["make"]})]), Reply(text="never asked")])
    request = CreateParams.model_validate({"model": "scripted", "input": "go", "tools": [SHELL]})
    response, events = asyncio.run(asyncio.wait_for(
        run_turns(model, request, MemoryWorkspace(sandbox), steering=["a queued steer"]), 10))
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "steered"}
    assert types(response) == ["shell_call", "shell_call_output"]
    assert len(model.requests) == 1
    assert events[-1]["type"] == "response.incomplete"


def test_apply_patch_and_the_text_editor_change_the_containers_files() -> None:
    files = MemoryFiles({"/app/a.py": "x = 1\ny = 2\n"})
    patch = {"type": "update_file", "path": "/app/a.py", "diff": "@@\n x = 1\n-y = 2\n+y = 3\n"}
    model = ScriptedModel([
        Reply(calls=[Call("apply_patch", patch)]),
        Reply(calls=[Call("str_replace_based_edit_tool", {"command": "view", "path": "/app/a.py"})]),
        Reply(text="done")])
    response, _ = respond(model, MemoryWorkspace(MemorySandbox(files)),
                          tools=[{"type": "apply_patch", "container": "auto"}, {"type": "text_editor_20250429"}])
    assert types(response) == ["apply_patch_call", "apply_patch_call_output", "custom_tool_call",
                               "custom_tool_call_output", "message"]
    assert response["output"][1]["status"] == "completed"
    assert files.text("/app/a.py") == "x = 1\ny = 3\n"
    assert "     2\ty = 3" in response["output"][3]["output"]


def test_arguments_that_do_not_fit_are_an_error_the_model_can_correct() -> None:
    model = ScriptedModel([Reply(calls=[Call("shell", {"commands": 5})]),
                           Reply(calls=[Call("shell", "{not json")]),
                           Reply(calls=[Call("shell", {"commands": ["true"]})]), Reply(text="fixed")])
    response, _ = respond(model, MemoryWorkspace(), tools=[SHELL])
    assert types(response) == ["shell_call", "shell_call_output"] * 3 + ["message"]
    refused = response["output"][1]["output"]
    assert refused[0]["outcome"] == {"type": "exit", "exit_code": 2} and "commands" in refused[0]["stderr"]
    assert response["output"][3]["output"][0]["stderr"].startswith("Error:")
    seen = model.requests[1].input[-1]
    assert seen["type"] == "function_call_output" and "`commands` must be" in seen["output"]


@pytest.mark.parametrize(("tool", "name", "arguments", "items", "reason"), [
    (SHELL, "shell", {"commands": []}, ["shell_call", "shell_call_output"], "[exit code 2]"),
    ({"type": "apply_patch", "container": "auto"}, "apply_patch", {"type": "rename", "path": "a"},
     ["apply_patch_call", "apply_patch_call_output"], "Failed: `type` must be one of"),
    ({"type": "text_editor_20250429"}, "str_replace_based_edit_tool", {"command": 1},
     ["custom_tool_call", "custom_tool_call_output"], "Error: `command` and `path`"),
    ({"type": "code_interpreter"}, "code_interpreter", {"code": " "}, ["code_interpreter_call"],
     "Error: `code` must be"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_a_refused_call_stays_an_item_of_its_tool_and_the_model_reads_why(
        tool: dict[str, Any], name: str, arguments: dict[str, Any], items: list[str], reason: str) -> None:
    model = ScriptedModel([Reply(calls=[Call(name, arguments)]), Reply(text="I see.")])
    response, events = respond(model, MemoryWorkspace(), tools=[tool])
    assert types(response) == [*items, "message"]
    assert not any(e["type"].startswith("response.function_call") for e in events)
    call_id = response["output"][0]["call_id"]
    assert all(item["call_id"] == call_id for item in response["output"][:-1])
    failed = response["output"][-2]
    assert failed.get("status") in (None, "completed", "failed")
    if failed["type"] in ("apply_patch_call_output", "code_interpreter_call"):
        assert failed["status"] == "failed"
    seen = model.requests[1].input[-1]
    assert seen["type"] == "function_call_output" and seen["call_id"] == call_id
    assert reason in seen["output"], seen["output"]


def test_apply_patch_is_the_clients_by_default_and_its_output_reaches_the_model() -> None:
    patch = {"type": "create_file", "path": "notes.txt", "diff": "+hello\n"}
    response, _ = respond(ScriptedModel([Reply(calls=[Call("apply_patch", patch)])]), tools=[{"type": "apply_patch"}])
    assert response["status"] == "completed"
    assert types(response) == ["apply_patch_call"]
    call = response["output"][0]
    assert call["operation"] == patch and call["status"] == "completed"

    def answer(request: ModelRequest) -> Reply:
        sent_call, result = request.input[-2:]
        assert (sent_call["type"], sent_call["name"], json.loads(sent_call["arguments"])) == (
            "function_call", "apply_patch", patch)
        assert result == {"type": "function_call_output", "id": "apo_1", "call_id": call["call_id"],
                          "output": "Failed: notes.txt exists"}
        return Reply(text="It exists already.")

    answered = {"type": "apply_patch_call_output", "id": "apo_1", "call_id": call["call_id"], "status": "failed",
                "output": "notes.txt exists"}
    model = ScriptedModel([answer])
    response, _ = respond(model, tools=[{"type": "apply_patch"}], input=[call, answered])
    assert types(response) == ["message"]


def test_a_named_hosted_tool_choice_reaches_a_chat_model_as_its_function() -> None:
    model = ScriptedModel([Reply(calls=[Call("str_replace_based_edit_tool", {"command": "view", "path": "/"})]),
                           Reply(text="seen")])
    respond(model, MemoryWorkspace(), tools=[{"type": "text_editor_20250429"}],
            tool_choice={"type": "text_editor_20250429"})
    assert model.requests[0].tool_choice == {"type": "function", "name": "str_replace_based_edit_tool"}
    assert model.requests[1].tool_choice == "auto"  # forcing a call again would never end


def test_client_tools_end_the_response_in_their_own_item_shapes() -> None:
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}, {"type": "local_shell"},
             {"type": "shell", "environment": {"type": "local"}}]
    model = ScriptedModel([Reply(calls=[Call("lookup", {"q": 1}), Call("local_shell", {"command": ["ls"]}),
                                        Call("shell", {"commands": ["pwd"]})])])
    response, _ = respond(model, tools=tools)
    assert response["status"] == "completed"
    assert types(response) == ["function_call", "local_shell_call", "shell_call"]
    assert response["output"][1]["action"]["command"] == ["ls"]
    assert response["output"][2]["environment"] == {"type": "local"}


def test_the_calls_of_one_turn_run_at_once() -> None:
    started = {"a": asyncio.Event(), "b": asyncio.Event()}

    async def both(command: Command) -> CommandOutput:
        mine, other = (("a", "b") if command.command == "a" else ("b", "a"))
        started[mine].set()
        await asyncio.wait_for(started[other].wait(), 5)  # run one after the other, this would time out
        return output(f"{mine} saw {other}")

    model = ScriptedModel([Reply(calls=[Call("shell", {"commands": ["a"]}), Call("shell", {"commands": ["b"]})]),
                           Reply(text="both")])
    response, _ = respond(model, MemoryWorkspace(MemorySandbox(run=both)), tools=[SHELL])
    results = sorted(item["output"][0]["stdout"] for item in response["output"] if item["type"] == "shell_call_output")
    assert results == ["a saw b", "b saw a"]


def test_hosted_calls_past_max_tool_calls_are_ignored_and_the_response_completes() -> None:
    lookup = {"type": "function", "name": "lookup"}
    two = Reply(calls=[Call("shell", {"commands": ["echo 1"]}), Call("shell", {"commands": ["echo 2"]})])
    model = ScriptedModel([two, Reply(calls=[Call("shell", {"commands": ["echo 3"]})]), Reply(text="had one")])
    ran: list[str] = []

    def record(command: Command) -> CommandOutput:
        ran.append(command.command)
        return output("ok\n")

    response, _ = respond(model, MemoryWorkspace(MemorySandbox(run=record)), tools=[SHELL, lookup],
                          max_tool_calls=1)
    assert response["status"] == "completed" and response["output"][-1]["content"][0]["text"] == "had one"
    assert ran == ["echo 1"]
    assert types(response) == ["shell_call", "shell_call_output", "message"]  # the rest: ignored, not output
    second, third = model.requests[1], model.requests[2]
    assert [tool["name"] for tool in second.tools] == ["lookup"]  # spent: no hosted tool is offered again
    told = [item["output"] for item in second.input if item["type"] == "function_call_output"]
    assert "ok" in told[0] and "max_tool_calls" in told[1]
    assert "max_tool_calls" in [item for item in third.input if item["type"] == "function_call_output"][-1]["output"]


def test_model_turns_are_capped() -> None:
    call = Reply(calls=[Call("shell", {"commands": ["true"]})])
    endless = ScriptedModel([call] * 50)
    response, _ = respond(endless, MemoryWorkspace(), tools=[SHELL])
    assert response["status"] == "incomplete" and len(endless.requests) == 50
    capped = ScriptedModel([call] * 10)
    response, _ = respond(capped, MemoryWorkspace(), max_turns=3, tools=[SHELL])
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_messages"}
    assert len(capped.requests) == 3


def test_a_responses_upstream_gets_native_tools_and_its_native_calls_run_here() -> None:
    native = {"type": "shell_call", "id": "sh_up", "call_id": "call_up", "status": "completed",
              "action": {"commands": ["echo native"]}, "environment": {"type": "local"}}
    model = ScriptedModel([Reply(native_items=[native]), Reply(text="ran")], native_tools=True)
    sandbox = MemorySandbox(run=lambda command: output("native\n"))
    response, _ = respond(model, MemoryWorkspace(sandbox), tools=[SHELL])
    assert model.requests[0].tools == [{"type": "shell", "environment": {"type": "local"}}]
    assert types(response) == ["shell_call", "shell_call_output", "message"]
    sent = model.requests[1].input[-2:]
    assert [item["type"] for item in sent] == ["shell_call", "shell_call_output"]
    assert sent[0]["environment"] == {"type": "local"}  # where it really ran is Cove's business


def test_the_code_interpreter_cites_the_files_a_cell_writes() -> None:
    files = MemoryFiles()

    async def kernel(command: Command) -> CommandOutput:
        await files.write("/mnt/data/out.csv", [b"a,b\n"])
        return output(json.dumps({"type": "stream", "text": "saved\n"}) + "\n")

    workspace = MemoryWorkspace(MemorySandbox(files, run=kernel))
    model = ScriptedModel([Reply(calls=[Call("code_interpreter", {"code": "save()"})]), Reply(text="Saved it.")])
    response, _ = respond(model, workspace, tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
    call = response["output"][0]
    assert call["type"] == "code_interpreter_call" and call["outputs"] == [{"type": "logs", "logs": "saved\n"}]
    assert workspace.cited == ["/mnt/data/out.csv"]
    assert files.text("/root/.cove-kernel/cell-call_1_0.py") == "save()"


def test_a_model_that_runs_out_of_tokens_ends_incomplete() -> None:
    response, _ = respond(ScriptedModel([Reply(text="cut sho", finish="length")]))
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"


def test_max_output_tokens_bounds_the_whole_response_across_turns() -> None:
    call = Reply(calls=[Call("shell", {"commands": ["true"]})])  # each turn spends 5 output tokens
    model = ScriptedModel([call, call, Reply(text="done")])
    response, _ = respond(model, MemoryWorkspace(), tools=[SHELL], max_output_tokens=12)
    assert [request.max_output_tokens for request in model.requests] == [12, 7, 2]
    assert response["status"] == "completed"
    spent = ScriptedModel([call, call, Reply(text="never asked")])
    response, _ = respond(spent, MemoryWorkspace(), tools=[SHELL], max_output_tokens=10)
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert len(spent.requests) == 2 and types(response) == ["shell_call", "shell_call_output"] * 2


CRM = {"type": "namespace", "name": "crm", "description": "Customer records.",
       "tools": [{"type": "function", "name": "lookup", "description": "Find a customer.",
                  "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}]}


def test_a_chat_model_calls_a_namespaces_functions_flat_and_the_client_gets_the_namespace() -> None:
    model = ScriptedModel([Reply(calls=[Call("crm__lookup", {"id": "7"})])])
    response, events = respond(model, tools=[CRM, {"type": "function", "name": "lookup"}])
    offered = model.requests[0].tools
    assert [tool["name"] for tool in offered] == ["crm__lookup", "lookup"]
    assert "Customer records." in offered[0]["description"] and "Find a customer." in offered[0]["description"]
    call = response["output"][0]
    assert (call["type"], call["name"], call["namespace"], call["arguments"]) == (
        "function_call", "lookup", "crm", '{"id": "7"}')
    added = next(event for event in events if event["type"] == "response.output_item.added")
    assert added["item"]["namespace"] == "crm"  # streamed in the namespace's shape from the start
    answer = ScriptedModel([Reply(text="found")])
    again, _ = respond(answer, tools=[CRM], input=[
        {"type": "function_call", "call_id": "c1", "name": "lookup", "namespace": "crm", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "Ada"}])
    assert again["status"] == "completed"
    sent = answer.requests[0].input
    assert sent[0]["name"] == "crm__lookup" and "namespace" not in sent[0]  # the names the model was offered


def test_a_responses_upstream_gets_the_namespace_whole_and_its_calls_keep_it() -> None:
    model = ScriptedModel([Reply(calls=[Call("lookup", {"id": "1"}, namespace="crm")]), Reply(text="Ada")],
                          native_tools=True)
    response, _ = respond(model, tools=[CRM])
    assert model.requests[0].tools == [CRM]
    assert {key: response["output"][0][key] for key in ("name", "namespace")} == {"name": "lookup", "namespace": "crm"}
    respond(model, tools=[CRM], input=[{**response["output"][0], "status": "completed"},
                                       {"type": "function_call_output", "call_id": "call_1_0", "output": "Ada"}])
    assert model.requests[1].input[0]["namespace"] == "crm"  # the upstream reads its own shape back


def test_long_namespaced_names_stay_within_64_characters_and_distinct() -> None:
    from cove.tools.namespace import flat_name
    long_a, long_b = flat_name("n" * 40, "f" * 30 + "a"), flat_name("n" * 40, "f" * 30 + "b")
    assert len(long_a) == len(long_b) == 64 and long_a != long_b
    assert flat_name("crm", "lookup") == "crm__lookup"


PATCHER = {"type": "custom", "name": "apply_patch", "description": "Edit files.",
           "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
PATCH = "*** Begin Patch\n*** End Patch\n"


def test_a_custom_tool_is_a_function_of_its_input_for_a_chat_model_and_a_custom_call_for_the_client() -> None:
    model = ScriptedModel([Reply(calls=[Call("apply_patch", {"input": PATCH})])])
    response, _ = respond(model, tools=[PATCHER])
    offered = model.requests[0].tools[0]
    assert offered["parameters"]["required"] == ["input"] and "start: /.+/" in offered["description"]
    call = response["output"][0]
    assert (call["type"], call["name"], call["input"]) == ("custom_tool_call", "apply_patch", PATCH)
    answer = ScriptedModel([Reply(text="patched")])
    respond(answer, tools=[PATCHER], input=[call, {"type": "custom_tool_call_output", "call_id": call["call_id"],
                                                   "output": "Done."}])
    sent = answer.requests[0].input
    assert (sent[0]["type"], sent[0]["name"], json.loads(sent[0]["arguments"])) == (
        "function_call", "apply_patch", {"input": PATCH})
    assert (sent[1]["type"], sent[1]["output"]) == ("function_call_output", "Done.")


def test_a_responses_upstream_gets_custom_tools_whole_and_the_hosted_editor_as_a_function() -> None:
    editor_call = {"type": "custom_tool_call", "call_id": "ed", "name": "str_replace_based_edit_tool",
                   "input": '{"command": "view", "path": "/"}'}
    history = [editor_call, {"type": "custom_tool_call_output", "call_id": "ed", "output": "bin"},
               {"type": "custom_tool_call", "call_id": "cp", "name": "apply_patch", "input": PATCH},
               {"type": "custom_tool_call_output", "call_id": "cp", "output": "Done."}]
    model = ScriptedModel([Reply(text="ok")], native_tools=True)
    respond(model, MemoryWorkspace(), tools=[PATCHER, {"type": "text_editor_20250429"}], input=history)
    assert model.requests[0].tools[0] == PATCHER
    assert [(item["type"], item.get("name")) for item in model.requests[0].input[:4]] == [
        ("function_call", "str_replace_based_edit_tool"), ("function_call_output", None),
        ("custom_tool_call", "apply_patch"), ("custom_tool_call_output", None)]
