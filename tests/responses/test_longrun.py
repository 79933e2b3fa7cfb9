"""Long-running background responses: resumed after ``kill -9`` from their last turn, ended at the
wall-clock limit with the tool call in flight stopped, and a heartbeat with the current step while a
tool call runs (``GET /v1/responses/{id}/progress``)."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.helpers import running_commands
from tests.polling import eventually
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

MODEL = "scripted-model"
SHELL = {"type": "shell", "environment": {"type": "container_auto"}}


def _shell(*commands: str) -> Reply:
    return Reply(tool_calls=[ToolCall("shell", json.dumps({"commands": list(commands), "timeout_ms": 600_000}))])


def _restart(server: Server, **env: str) -> None:
    server.stop()
    server.env.update(env)
    server.start()


def _events(http: httpx.Client, response_id: str, starting_after: int = -1) -> list[dict[str, Any]]:
    """The response's stream from ``starting_after`` to its end (stored, then live)."""
    with http.stream("GET", f"/v1/responses/{response_id}", timeout=120,
                     params={"stream": "true", "starting_after": starting_after}) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]


def test_a_background_response_resumes_after_kill_9(own_server: Server, upstream: ScriptedUpstream) -> None:
    slow = "sleep 3997"
    upstream.script([_shell("echo kept > /root/kept.txt && echo first done"), _shell(slow),
                     Reply(text="finished after the restart")])
    http = own_server.http()
    seen: list[dict[str, Any]] = []
    with http.stream("POST", "/v1/responses", json={"model": MODEL, "input": "work", "tools": [SHELL],
                                                     "background": True, "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                seen.append(json.loads(line[6:]))
                added = [e for e in seen if e["type"] == "response.output_item.added"]
                if len(added) == 4 and added[-1]["item"]["type"] == "shell_call_output":
                    break  # the second call's output has started: its command runs
    response_id = seen[0]["response"]["id"]
    eventually(lambda: running_commands([slow]), timeout=60, what="the second call's command running")
    first_output = next(e["item"] for e in seen if e["type"] == "response.output_item.done"
                        and e["item"]["type"] == "shell_call_output")
    assert first_output["output"][0]["stdout"] == "first done\n", first_output
    http.close()
    own_server.stop(signal.SIGKILL)
    own_server.start()
    http = own_server.http()

    cut = seen[-1]["sequence_number"]
    rest = _events(http, response_id, cut)  # a client that had followed the stream up to the kill goes on
    assert [e["sequence_number"] for e in rest] == list(range(cut + 1, cut + 1 + len(rest))), rest[:3]
    assert rest[-1]["type"] == "response.completed", rest[-3:]
    whole = _events(http, response_id)
    assert [e["sequence_number"] for e in whole] == list(range(len(whole)))
    assert [(e["sequence_number"], e["type"]) for e in whole[:len(seen)]] == [
        (e["sequence_number"], e["type"]) for e in seen]

    final = http.get(f"/v1/responses/{response_id}").raise_for_status().json()
    assert final["status"] == "completed", final
    output = final["output"]
    assert [item["type"] for item in output] == ["shell_call", "shell_call_output", "shell_call",
                                                 "shell_call_output", "message"], output
    assert output[1] == first_output  # what finished before the kill is kept as it was
    assert output[2]["action"]["commands"] == [slow]
    stopped = output[3]["output"][0]
    assert "restarted" in stopped["stderr"] and stopped["outcome"]["exit_code"] != 0, stopped
    assert output[4]["content"][0]["text"] == "finished after the restart"
    assert all(item["status"] == "completed" for item in output), output
    # The model read the restart as the interrupted call's output, after the first call's real one.
    tool_messages = [m["content"] for m in upstream.requests[-1]["messages"] if m.get("role") == "tool"]
    assert len(tool_messages) == 2 and "first done" in tool_messages[0] and "restarted" in tool_messages[1]

    container_id = final["container_id"]
    assert container_id == output[0]["environment"]["container_id"] == output[2]["environment"]["container_id"]
    kept = http.post(f"/v1/containers/{container_id}/exec", json={"commands": ["cat /root/kept.txt"]})
    assert kept.raise_for_status().json()["output"][0]["stdout"] == "kept\n"
    progress = http.get(f"/v1/responses/{response_id}/progress").raise_for_status().json()
    assert (progress["resumes"], progress["turns"], progress["status"]) == (1, 3, "completed"), progress
    eventually(lambda: not running_commands([slow]), timeout=60, what="the killed server's command gone")
    http.close()


def test_the_time_limit_ends_a_response_and_stops_its_command(own_server: Server,
                                                               upstream: ScriptedUpstream) -> None:
    slow = "sleep 60.0417"  # 60 s, told apart from other tests' sleeps
    _restart(own_server, COVE_RESPONSE_TIME_LIMIT="2")
    upstream.script([_shell(slow)])
    client = own_server.client()
    started = time.monotonic()
    response = client.responses.create(model=MODEL, input="work", tools=[SHELL], background=True)  # type: ignore[list-item]
    ended = eventually(lambda: (r := client.responses.retrieve(response.id)).status not in ("queued", "in_progress")
                       and r, timeout=45, what="the response to end")
    took = time.monotonic() - started
    assert ended.status == "incomplete" and ended.incomplete_details is not None, ended
    assert ended.incomplete_details.reason == "max_messages"
    assert took < 30, took  # the limit is 2 s; the command would take 60
    call, output = ended.output
    assert (call.type, call.status, output.type, output.status) == (
        "shell_call", "completed", "shell_call_output", "incomplete")
    eventually(lambda: not running_commands([slow]), timeout=20, what="the command stopped")
    with own_server.http() as http:
        events = _events(http, response.id)
    assert events[-1]["type"] == "response.incomplete"
    added = {e["output_index"] for e in events if e["type"] == "response.output_item.added"}
    done = {e["output_index"] for e in events if e["type"] == "response.output_item.done"}
    assert added == done == {0, 1}  # the stopped call's output is closed on the wire too


def test_heartbeat_and_step_while_a_tool_call_runs(own_server: Server, upstream: ScriptedUpstream) -> None:
    slow = "sleep 30.0419"
    _restart(own_server, COVE_HEARTBEAT_SECONDS="0.2", COVE_STUCK_TOOL_SECONDS="1")
    upstream.script([_shell(slow)])
    client = own_server.client()
    response = client.responses.create(model=MODEL, input="work", tools=[SHELL], background=True)  # type: ignore[list-item]
    http = own_server.http()

    def progress() -> dict[str, Any]:
        return dict(http.get(f"/v1/responses/{response.id}/progress").raise_for_status().json())

    first = eventually(lambda: (p := progress())["tool_calls"] and p["heartbeat_at"] and p, timeout=60,
                       what="the tool call in the progress")
    assert (first["object"], first["status"], first["step"], first["turns"]) == (
        "response.progress", "in_progress", "tools", 1), first
    assert first["tool_calls"][0]["tool"] == "shell" and first["started_at"] <= first["step_started_at"]
    later = eventually(lambda: (p := progress())["heartbeat_at"] > first["heartbeat_at"] + 0.3 and p, timeout=20,
                       what="the heartbeat to advance")
    assert later["tool_calls"][0]["call_id"] == first["tool_calls"][0]["call_id"]
    assert later["tool_calls"][0]["running_seconds"] > first["tool_calls"][0]["running_seconds"]
    retrieved = client.responses.retrieve(response.id)  # what the SDK sees is a plain response
    assert retrieved.status == "in_progress" and not hasattr(retrieved, "heartbeat_at")
    eventually(lambda: f"response {response.id}: its shell call" in own_server.log.read_text(), timeout=20,
               what="the stuck call logged")
    client.responses.cancel(response.id)
    eventually(lambda: not running_commands([slow]), timeout=20, what="the cancelled command stopped")
    stopped = progress()
    assert (stopped["status"], stopped["step"], stopped["tool_calls"]) == ("cancelled", None, [])
    other = httpx.get(f"{own_server.url}/v1/responses/{response.id}/progress",
                      headers={"Authorization": "Bearer test-key-beta"})
    assert other.status_code == 404  # another project's response is not there
    http.close()
