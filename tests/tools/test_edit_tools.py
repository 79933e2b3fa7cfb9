"""Hosted apply_patch and the text editor, run inside the response's container."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import run
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

MODEL = "scripted-model"


def call(name: str, **arguments: Any) -> Reply:
    return Reply(tool_calls=[ToolCall(name=name, arguments=json.dumps(arguments))])


def test_apply_patch_success_and_failed_hunk(client: openai.OpenAI, http: httpx.Client,
                                             upstream: ScriptedUpstream) -> None:
    container = client.containers.create(name="patching").id
    create = "+def greet():\n+    return 'hello'\n"
    update = "@@ def greet():\n-    return 'hello'\n+    return 'bonjour'\n"
    wrong = "@@ def greet():\n-    return 'goodbye'\n+    return 'ciao'\n"
    upstream.script([call("apply_patch", type="create_file", path="/app/greet.py", diff=create),
                     call("apply_patch", type="update_file", path="/app/greet.py", diff=update),
                     call("apply_patch", type="update_file", path="/app/greet.py", diff=wrong),
                     Reply(text="patched")])
    tool = {"type": "apply_patch", "container": container}  # Cove's extension: hosted in this container
    response = client.responses.create(model=MODEL, input="edit", tools=[tool])  # type: ignore[list-item]
    kinds = [item.type for item in response.output]
    assert kinds == ["apply_patch_call", "apply_patch_call_output"] * 3 + ["message"]
    outputs = [item.model_dump() for item in response.output if item.type == "apply_patch_call_output"]
    assert [o["status"] for o in outputs] == ["completed", "completed", "failed"]
    assert "goodbye" in outputs[2]["output"]
    first_call = response.output[0].model_dump()
    assert first_call["operation"] == {"type": "create_file", "path": "/app/greet.py", "diff": create}
    out = run(http, container, "cd /app && python3 -c 'import greet; print(greet.greet())'")
    assert out[0]["stdout"] == "bonjour\n"
    tool_messages = [m["content"] for m in upstream.requests[-1]["messages"] if m["role"] == "tool"]
    assert tool_messages[2].startswith("Failed: ")


def test_text_editor_commands(client: openai.OpenAI, http: httpx.Client, upstream: ScriptedUpstream) -> None:
    container = client.containers.create(name="editing").id
    tool = {"type": "text_editor_20250429"}
    name = "str_replace_based_edit_tool"
    upstream.script([call(name, command="create", path="/notes/todo.txt", file_text="one\ntwo\nthree\n"),
                     call(name, command="str_replace", path="/notes/todo.txt", old_str="two", new_str="TWO"),
                     call(name, command="insert", path="/notes/todo.txt", insert_line=0, new_str="zero"),
                     call(name, command="view", path="/notes/todo.txt"),
                     call(name, command="str_replace", path="/notes/todo.txt", old_str="missing", new_str="x"),
                     Reply(text="edited")])
    response = client.responses.create(model=MODEL, input="edit", tools=[tool],  # type: ignore[list-item]
                                       extra_body={"container_id": container})
    outputs = [item.model_dump()["output"] for item in response.output if item.type == "custom_tool_call_output"]
    assert outputs[0] == "File created successfully at: /notes/todo.txt"
    assert "has been edited" in outputs[1]
    header, *numbered = outputs[3].splitlines()
    assert header == "Here's the result of running `cat -n` on /notes/todo.txt:"
    cells = [line.split("\t", 1) for line in numbered[:4]]
    assert [(int(number), text) for number, text in cells] == [(1, "zero"), (2, "one"), (3, "TWO"), (4, "three")]
    assert outputs[4].startswith("Error: No replacement was performed")
    calls = [item.model_dump() for item in response.output if item.type == "custom_tool_call"]
    assert calls[0]["name"] == name and json.loads(calls[0]["input"])["command"] == "create"
    assert run(http, container, "cat /notes/todo.txt")[0]["stdout"] == "zero\none\nTWO\nthree\n"


def test_apply_patch_is_run_by_the_client_by_default(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    containers_before = [c.id for c in client.containers.list()]
    operation = {"type": "create_file", "path": "src/hello.py", "diff": "+print('hello')\n"}
    upstream.script([call("apply_patch", **operation), Reply(text="created it")])
    response = client.responses.create(model=MODEL, input="make hello.py", tools=[{"type": "apply_patch"}])
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["apply_patch_call"]
    patch_call = response.output[0]
    assert patch_call.type == "apply_patch_call"
    assert patch_call.operation.model_dump() == operation and patch_call.status == "completed"
    assert [c.id for c in client.containers.list()] == containers_before  # nothing ran in any container
    assert upstream.requests[0]["tools"][0]["function"]["name"] == "apply_patch"

    follow = client.responses.create(
        model=MODEL, previous_response_id=response.id, tools=[{"type": "apply_patch"}],
        input=[{"type": "apply_patch_call_output", "call_id": patch_call.call_id, "status": "failed",
                "output": "src/ does not exist"}])
    assert follow.output_text == "created it"
    call_message, result = upstream.requests[-1]["messages"][-2:]
    assert json.loads(call_message["tool_calls"][0]["function"]["arguments"]) == operation
    assert result == {"role": "tool", "tool_call_id": patch_call.call_id, "content": "Failed: src/ does not exist"}


def test_apply_patch_with_an_auto_container_is_hosted(client: openai.OpenAI, http: httpx.Client,
                                                      upstream: ScriptedUpstream) -> None:
    upstream.script([call("apply_patch", type="create_file", path="/app/note.txt", diff="+hosted\n"),
                     Reply(text="written")])
    response = client.responses.create(model=MODEL, input="note", tools=[{"type": "apply_patch", "container": "auto"}])  # type: ignore[list-item]
    assert [item.type for item in response.output] == ["apply_patch_call", "apply_patch_call_output", "message"]
    container = response.model_dump()["container_id"]
    assert container and run(http, container, "cat /app/note.txt")[0]["stdout"] == "hosted\n"
