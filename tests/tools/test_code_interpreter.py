"""The hosted code interpreter: a stateful Python session, images, cited files, events."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import stream_response
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

MODEL = "scripted-model"
TOOL = {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "4g"}}


def python(code: str) -> Reply:
    return Reply(tool_calls=[ToolCall(name="code_interpreter", arguments=json.dumps({"code": code}))])


def calls(response: Any) -> list[dict[str, Any]]:
    return [item.model_dump() for item in response.output if item.type == "code_interpreter_call"]


def test_state_survives_between_calls_and_responses(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([python("x = 21\nprint('set')"), python("print(x * 2)"), Reply(text="x doubled is 42")])
    first = client.responses.create(model=MODEL, input="compute", tools=[TOOL],  # type: ignore[list-item]
                                    include=["code_interpreter_call.outputs"])
    first_calls = calls(first)
    assert [c["outputs"][0] for c in first_calls] == [{"type": "logs", "logs": "set\n"},
                                                       {"type": "logs", "logs": "42\n"}]
    assert first_calls[0]["container_id"] == first.model_extra["container_id"]  # type: ignore[index]
    assert first.output_text == "x doubled is 42"
    tool_messages = [m["content"] for m in upstream.requests[-1]["messages"] if m["role"] == "tool"]
    assert tool_messages == ["set\n", "42\n"]
    upstream.script([python("print(x + 1)"), Reply(text="22")])
    second = client.responses.create(model=MODEL, input="more", previous_response_id=first.id, tools=[TOOL],  # type: ignore[list-item]
                                     include=["code_interpreter_call.outputs"])
    assert calls(second)[0]["outputs"][0]["logs"] == "22\n"


def test_errors_are_outputs(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([python("1 / 0"), Reply(text="oops")])
    response = client.responses.create(model=MODEL, input="divide", tools=[TOOL],  # type: ignore[list-item]
                                       include=["code_interpreter_call.outputs"])
    logs = calls(response)[0]["outputs"][0]["logs"]
    assert "ZeroDivisionError" in logs and response.status == "completed"


def test_figure_becomes_an_image_and_files_are_cited(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    code = ("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\n"
            "open('/mnt/data/squares.csv', 'w').write('n,sq\\n1,1\\n2,4\\n3,9\\n')")
    upstream.script([python(code), Reply(text="Here is the chart and the data.")])
    response = client.responses.create(model=MODEL, input="plot", tools=[TOOL],  # type: ignore[list-item]
                                       include=["code_interpreter_call.outputs"])
    outputs = calls(response)[0]["outputs"]
    image = next(o for o in outputs if o["type"] == "image")
    assert image["url"].startswith("data:image/png;base64,")
    assert base64.b64decode(image["url"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    message = next(item for item in response.output if item.type == "message")
    [annotation] = message.content[0].annotations  # type: ignore[union-attr]
    assert annotation.type == "container_file_citation"
    container_id = response.model_extra["container_id"]  # type: ignore[index]
    assert annotation.container_id == container_id and annotation.filename == "squares.csv"  # type: ignore[union-attr]
    content = client.containers.files.content.retrieve(annotation.file_id, container_id=container_id)  # type: ignore[union-attr]
    assert content.read() == b"n,sq\n1,1\n2,4\n3,9\n"


def test_interpreter_events(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([python("print('hi')"), Reply(text="done")])
    events = stream_response(http, {"model": MODEL, "input": "go", "tools": [TOOL],
                                    "include": ["code_interpreter_call.outputs"]})
    types = [e["type"] for e in events]
    start = types.index("response.code_interpreter_call.in_progress")
    assert types[start - 1] == "response.output_item.added"
    assert types[start:start + 5] == ["response.code_interpreter_call.in_progress",
                                      "response.code_interpreter_call_code.delta",
                                      "response.code_interpreter_call_code.done",
                                      "response.code_interpreter_call.interpreting",
                                      "response.code_interpreter_call.completed"]
    assert types[start + 5] == "response.output_item.done"
    assert events[start + 5]["item"]["outputs"][0]["logs"] == "hi\n"
