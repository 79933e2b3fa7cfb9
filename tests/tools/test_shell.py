"""The hosted shell tool end to end: the model calls it, Cove runs it in a container, the model answers."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Server
from tests.helpers import make_wheel, stream_response
from tests.polling import eventually
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

MODEL = "scripted-model"
SHELL = {"type": "shell", "environment": {"type": "container_auto"}}


def shell(*commands: str, **action: Any) -> Reply:
    return Reply(tool_calls=[ToolCall(name="shell", arguments=json.dumps({"commands": list(commands), **action}))])


def outputs(response: Any) -> list[dict[str, Any]]:
    return [entry for item in response.output if item.type == "shell_call_output" for entry in
            item.model_dump()["output"]]


def test_multi_step_task(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([shell("printf 'print(6 * 7)\\n' > /tmp/task.py"), shell("python3 /tmp/task.py"),
                     Reply(text="The program printed 42.")])
    response = client.responses.create(model=MODEL, input="Write and run a program.", tools=[SHELL])  # type: ignore[list-item]
    assert [item.type for item in response.output] == ["shell_call", "shell_call_output", "shell_call",
                                                       "shell_call_output", "message"]
    assert response.output_text == "The program printed 42."
    assert outputs(response)[1]["stdout"] == "42\n"
    assert outputs(response)[1]["outcome"] == {"type": "exit", "exit_code": 0}
    call = response.output[0].model_dump()
    container_id = response.model_extra["container_id"]  # type: ignore[index]
    assert call["environment"] == {"type": "container_reference", "container_id": container_id}
    assert container_id.startswith("cntr_")
    # The model saw the tool results as function results.
    tool_messages = [m for m in upstream.requests[-1]["messages"] if m["role"] == "tool"]
    assert "42" in tool_messages[-1]["content"]
    assert upstream.requests[0]["tools"][0]["function"]["name"] == "shell"


def test_packages_follow_the_chain_and_the_reference(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    container = client.containers.create(name="tool-pip")
    filename, wheel = make_wheel("toolpkg", "4.5.6")
    client.containers.files.create(container.id, file=(filename, wheel))
    reference = {"type": "shell", "environment": {"type": "container_reference", "container_id": container.id}}
    upstream.script([shell(f"pip install --no-index /mnt/data/{filename}", timeout_ms=120_000), Reply(text="ok")])
    first = client.responses.create(model=MODEL, input="install it", tools=[reference])  # type: ignore[list-item]
    assert outputs(first)[0]["outcome"] == {"type": "exit", "exit_code": 0}, outputs(first)
    check = "python3 -c 'import toolpkg; print(toolpkg.VALUE)'"
    upstream.script([shell(check), Reply(text="followed")])
    second = client.responses.create(model=MODEL, input="use it", previous_response_id=first.id, tools=[SHELL])  # type: ignore[list-item]
    assert outputs(second)[0]["stdout"] == "4.5.6\n"
    assert second.model_extra["container_id"] == container.id  # type: ignore[index]
    upstream.script([shell(check), Reply(text="referenced")])
    third = client.responses.create(model=MODEL, input="again", tools=[reference])  # type: ignore[list-item]
    assert outputs(third)[0]["stdout"] == "4.5.6\n"


def test_concurrent_calls_in_one_turn(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    # Each call waits for the other's marker: run one after the other, the first would time out.
    a = "touch /tmp/a; for i in $(seq 100); do [ -e /tmp/b ] && echo a-saw-b && exit 0; sleep 0.05; done; exit 1"
    b = "touch /tmp/b; for i in $(seq 100); do [ -e /tmp/a ] && echo b-saw-a && exit 0; sleep 0.05; done; exit 1"
    upstream.script([Reply(tool_calls=[ToolCall(name="shell", arguments=json.dumps({"commands": [a]})),
                                       ToolCall(name="shell", arguments=json.dumps({"commands": [b]}))]),
                     Reply(text="both")])
    response = client.responses.create(model=MODEL, input="go", tools=[SHELL])  # type: ignore[list-item]
    assert sorted(entry["stdout"] for entry in outputs(response)) == ["a-saw-b\n", "b-saw-a\n"]


def test_timeout_and_truncation(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([shell("sleep 30", timeout_ms=500), shell("yes 0123456789 | head -c 100000", max_output_length=100),
                     Reply(text="done")])
    response = client.responses.create(model=MODEL, input="go", tools=[SHELL])  # type: ignore[list-item]
    timed_out, flood = outputs(response)
    assert timed_out["outcome"] == {"type": "timeout"}
    assert "characters truncated" in flood["stdout"] and len(flood["stdout"]) < 200
    assert response.output[3].model_dump()["max_output_length"] == 100


def test_shell_events_stream_in_order(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([shell("echo one; sleep 0.3; echo two"), Reply(text="fine")])
    events = stream_response(http, {"model": MODEL, "input": "go", "tools": [SHELL]})
    types = [e["type"] for e in events]
    call_added = types.index("response.output_item.added")
    assert events[call_added]["item"]["type"] == "shell_call"
    expected = ["response.shell_call_command.added", "response.shell_call_command.delta",
                "response.shell_call_command.done", "response.output_item.done", "response.output_item.added"]
    assert types[call_added + 1:call_added + 6] == expected
    deltas = [e["delta"] for e in events if e["type"] == "response.shell_call_output_content.delta"]
    assert deltas == [{"stdout": "one\n"}, {"stdout": "two\n"}]
    done = next(e for e in events if e["type"] == "response.shell_call_output_content.done")
    assert done["output"][0]["stdout"] == "one\ntwo\n"
    assert types[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_top_level_container_id_and_dead_containers(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    container = client.containers.create(name="named")
    upstream.script([shell("hostname > /mnt/data/who"), Reply(text="ok")])
    response = client.responses.create(model=MODEL, input="go", tools=[{"type": "shell"}],  # type: ignore[list-item]
                                       extra_body={"container_id": container.id})
    assert response.model_extra["container_id"] == container.id  # type: ignore[index]
    assert [f.path for f in client.containers.files.list(container.id)] == ["/mnt/data/who"]
    client.containers.delete(container.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="go", tools=[{"type": "shell"}],  # type: ignore[list-item]
                                extra_body={"container_id": container.id})
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="go", previous_response_id=response.id, tools=[SHELL])  # type: ignore[list-item]


@pytest.mark.slow  # the shortest expiry is a minute
def test_a_chain_whose_container_expired_goes_on_from_its_snapshot(own_server: Server,
                                                                    upstream: ScriptedUpstream) -> None:
    """The container expired, but the response that used it left a snapshot (docs/snapshots.md): a
    continuation gets a new container with the files as that response left them."""
    client = own_server.client()
    container = client.containers.create(name="short", expires_after={"anchor": "last_active_at", "minutes": 1})
    upstream.script([shell("echo kept > /root/state"), Reply(text="ok")])
    first = client.responses.create(model=MODEL, input="go", tools=[SHELL],  # type: ignore[list-item]
                                    extra_body={"container_id": container.id})
    eventually(lambda: client.containers.retrieve(container.id).status == "expired", timeout=100, interval=0.5,
               what="the idle container to expire")
    upstream.script([shell("cat /root/state"), Reply(text="ok")])
    more = client.responses.create(model=MODEL, input="more", previous_response_id=first.id,
                                   tools=[SHELL])  # type: ignore[list-item]
    assert outputs(more)[0]["stdout"] == "kept\n"
    revived = more.model_extra["container_id"]  # type: ignore[index]
    assert revived != container.id and client.containers.retrieve(revived).status == "running"
    assert client.containers.retrieve(container.id).status == "expired"
    # A container named by the request is used as it is: an expired one is a clear 409.
    with pytest.raises(openai.ConflictError) as info:
        client.responses.create(model=MODEL, input="named", tools=[SHELL],  # type: ignore[list-item]
                                extra_body={"container_id": container.id})
    assert info.value.body["code"] == "container_expired"  # type: ignore[index]


def test_hostile_command_stays_inside(client: openai.OpenAI, upstream: ScriptedUpstream, server: Server) -> None:
    secret = Path("/root") / f"cove-tool-secret-{secrets.token_hex(4)}"
    secret.write_text("host-only\n")
    try:
        upstream.script([shell(f"cat {secret}; ls /root; curl -sS -m 2 {server.url}/healthz; "
                               "mount -t tmpfs x /mnt; id -u"), Reply(text="tried")])
        response = client.responses.create(model=MODEL, input="escape", tools=[SHELL])  # type: ignore[list-item]
        entry = outputs(response)[0]
        assert "host-only" not in entry["stdout"] + entry["stderr"]
        assert '"status"' not in entry["stdout"]
        assert entry["stdout"].strip().endswith("0")
    finally:
        secret.unlink()


def test_local_environment_returns_the_call(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    local = {"type": "shell", "environment": {"type": "local"}}
    upstream.script([shell("ls ~"), Reply(text="your home has notes.txt")])
    first = client.responses.create(model=MODEL, input="list my home", tools=[local])  # type: ignore[list-item]
    call = first.output[0].model_dump()
    assert call["type"] == "shell_call" and call["environment"] == {"type": "local"}
    assert first.model_extra.get("container_id") is None  # type: ignore[union-attr]
    second = client.responses.create(model=MODEL, previous_response_id=first.id, tools=[local], input=[  # type: ignore[list-item]
        {"type": "shell_call_output", "call_id": call["call_id"],
         "output": [{"stdout": "notes.txt\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]}])
    assert second.output_text == "your home has notes.txt"
    tool_message = upstream.requests[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and "notes.txt" in tool_message["content"]


def test_limits_and_bad_arguments(client: openai.OpenAI, upstream: ScriptedUpstream, http: httpx.Client) -> None:
    upstream.script([shell("echo 1"), shell("echo 2"), shell("echo 3"), Reply(text="two ran")])
    capped = client.responses.create(model=MODEL, input="loop", tools=[SHELL], max_tool_calls=2)  # type: ignore[list-item]
    assert capped.status == "completed" and capped.output_text == "two ran"  # the third call: ignored
    assert [entry["stdout"] for entry in outputs(capped)] == ["1\n", "2\n"]
    assert "tools" not in upstream.requests[2] and "max_tool_calls" in upstream.requests[3]["messages"][-1]["content"]
    upstream.reset()
    upstream.script([Reply(tool_calls=[ToolCall(name="shell", arguments='{"commands": 5}')]), Reply(text="sorry")])
    fixed = client.responses.create(model=MODEL, input="bad", tools=[SHELL])  # type: ignore[list-item]
    assert fixed.status == "completed" and fixed.output_text == "sorry"
    assert [item.type for item in fixed.output] == ["shell_call", "shell_call_output", "message"]
    error = fixed.output[1].model_dump()["output"][0]
    assert error["outcome"] == {"type": "exit", "exit_code": 2} and "commands" in error["stderr"]
    sized = {"type": "shell", "environment": {"type": "container_auto", "memory_limit": "4g"}}
    upstream.script([shell("true"), Reply(text="ok")])
    response = client.responses.create(model=MODEL, input="go", tools=[sized])  # type: ignore[list-item]
    container = client.containers.retrieve(response.model_extra["container_id"])  # type: ignore[index]
    assert container.memory_limit == "4g"
    bad = http.post("/v1/responses", json={"model": MODEL, "input": "x", "tools": [
        {"type": "shell", "environment": {"type": "container_auto",
                                          "network_policy": {"type": "allowlist", "allowed_domains": ["10.0.0.1"]}}}]})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "tools[0].environment.network_policy.allowed_domains[0]"


def test_responses_upstream_gets_native_tools(own_server: Server, upstream: ScriptedUpstream) -> None:
    own_server.stop()
    own_server.env["COVE_UPSTREAM_API"] = "responses"
    own_server.start()
    client = own_server.client()
    native_call = {"type": "shell_call", "id": "sh_up", "call_id": "call_native", "status": "completed",
                   "action": {"commands": ["echo native"]}, "environment": {"type": "local"}}
    upstream.script([Reply(native_items=[native_call]), Reply(text="ran natively")])
    response = client.responses.create(model=MODEL, input="go", tools=[SHELL])  # type: ignore[list-item]
    assert response.output_text == "ran natively"
    assert upstream.requests[0]["tools"] == [{"type": "shell", "environment": {"type": "local"}}]
    assert outputs(response)[0]["stdout"] == "native\n"
    call = next(item.model_dump() for item in response.output if item.type == "shell_call")
    assert call["environment"]["type"] == "container_reference"
    sent = upstream.requests[-1]["input"]
    assert [item["type"] for item in sent[-2:]] == ["shell_call", "shell_call_output"]
    assert sent[-2]["environment"] == {"type": "local"}


def test_local_shell_stays_client_side(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall(name="local_shell", arguments='{"command": ["uname", "-a"]}')]),
                     Reply(text="It is Linux.")])
    first = client.responses.create(model=MODEL, input="what os?", tools=[{"type": "local_shell"}])  # type: ignore[list-item]
    call = first.output[0].model_dump()
    assert call["type"] == "local_shell_call" and call["action"]["command"] == ["uname", "-a"]
    second = client.responses.create(model=MODEL, previous_response_id=first.id, tools=[{"type": "local_shell"}],  # type: ignore[list-item]
                                     input=[{"type": "local_shell_call_output", "id": call["call_id"],
                                             "output": json.dumps({"stdout": "Linux box"})}])
    assert second.output_text == "It is Linux."
    tool_message = upstream.requests[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and "Linux box" in tool_message["content"]
    assert tool_message["tool_call_id"] == call["call_id"]


def test_required_tool_choice_forces_only_the_first_turn(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([shell("echo once"), Reply(text="done after one call")])
    response = client.responses.create(model=MODEL, input="go", tools=[SHELL], tool_choice="required")  # type: ignore[list-item]
    assert response.status == "completed" and response.output_text == "done after one call"
    assert upstream.requests[-2]["tool_choice"] == "required"
    assert upstream.requests[-1]["tool_choice"] == "auto"


def test_projects_may_be_limited_to_some_tools(own_server: Server, upstream: ScriptedUpstream) -> None:
    rules = own_server.data_dir.with_name(own_server.data_dir.name + "-projects.toml")
    rules.write_text('[projects.beta]\ntools = ["function"]\n')
    own_server.stop()
    own_server.env["COVE_PROJECTS_FILE"] = str(rules)
    own_server.start()
    with pytest.raises(openai.BadRequestError) as info:
        own_server.client("beta").responses.create(model=MODEL, input="go", tools=[SHELL])  # type: ignore[list-item]
    assert info.value.body["param"] == "tools[0].type"  # type: ignore[index]
    assert info.value.body["code"] == "tool_not_allowed"  # type: ignore[index]
    upstream.script([Reply(text="alpha may")])
    allowed = own_server.client("alpha").responses.create(model=MODEL, input="go", tools=[SHELL])  # type: ignore[list-item]
    assert allowed.output_text == "alpha may"
    rules.unlink()
