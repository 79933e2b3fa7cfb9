"""``kill -9`` of a busy server: 100 background responses (running, queued, some in hosted tools)
and 20 running execs in four containers. After a restart on the same data dir nothing is lost or
stuck: every response completes (the running ones resumed), every container runs commands and
keeps its files, the audit trail reads back whole, and no process of the old server lives on."""

from __future__ import annotations

import json
import signal
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.helpers import running_commands
from tests.polling import eventually
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

MODEL = "scripted-model"
RESPONSES = 100
EXEC_CONTAINERS, EXECS_PER_CONTAINER = 4, 5
EXEC_SLEEPS = [f"sleep {3100 + n}" for n in range(EXEC_CONTAINERS * EXECS_PER_CONTAINER)]
TOOL_SLEEP = "sleep 3999"
"""Distinctive commands (one per exec), so the test can find each one's process on the host."""
TERMINAL = {"completed", "failed", "incomplete", "cancelled"}


def _replay(http: httpx.Client, response_id: str) -> list[dict[str, Any]]:
    with http.stream("GET", f"/v1/responses/{response_id}", params={"stream": "true"}, timeout=30) as response:
        return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]


def _slow_or_tool(body: dict[str, Any]) -> Reply:
    """Before the crash: requests with tools call the shell (which sleeps), others stream for long."""
    has_tool_result = any(m.get("role") == "tool" for m in body.get("messages", []))
    if body.get("tools") and not has_tool_result:
        return Reply(tool_calls=[ToolCall("shell", json.dumps({"commands": [TOOL_SLEEP], "timeout_ms": 600_000}))])
    return Reply(text="slow " * 400, chunk_delay=0.05)


def _exec(server: Server, container_id: str, command: str, stream: bool) -> str:
    """One long exec; returns how it ended for the client (the server dies under it)."""
    body = {"commands": [command], "timeout_ms": 600_000, "stream": stream}
    try:
        with server.http() as http:
            if stream:
                with http.stream("POST", f"/v1/containers/{container_id}/exec", json=body) as response:
                    for _line in response.iter_lines():
                        pass
                    return f"stream ended with {response.status_code}"
            return f"answered {http.post(f'/v1/containers/{container_id}/exec', json=body).status_code}"
    except httpx.HTTPError as exc:
        return type(exc).__name__


def test_kill_9_under_load_loses_nothing(own_server: Server, upstream: ScriptedUpstream) -> None:
    http = own_server.http()
    containers = [http.post("/v1/containers", json={"name": f"crash-{i}"}).raise_for_status().json()["id"]
                  for i in range(EXEC_CONTAINERS + 2)]
    exec_containers, tool_containers = containers[:EXEC_CONTAINERS], containers[EXEC_CONTAINERS:]
    for container_id in containers:
        http.post(f"/v1/containers/{container_id}/files",
                  files={"file": ("kept.txt", container_id.encode())}).raise_for_status()
        done = http.post(f"/v1/containers/{container_id}/exec",
                         json={"commands": [f"echo {container_id} > /root/state.txt"]}).raise_for_status().json()
        assert done["output"][0]["outcome"] == {"type": "exit", "exit_code": 0}, done

    upstream.script([_slow_or_tool] * (3 * RESPONSES))
    ids = []
    for i in range(RESPONSES):
        body: dict[str, Any] = {"model": MODEL, "input": f"job {i}", "background": True}
        if i % 3 == 0:  # a third call the hosted shell, in one of two shared containers
            body["tools"] = [{"type": "shell", "environment": {"type": "container_reference",
                                                               "container_id": tool_containers[i % 2]}}]
        created = http.post("/v1/responses", json=body).raise_for_status().json()
        assert created["status"] == "queued"
        ids.append(created["id"])
    pool = ThreadPoolExecutor(EXEC_CONTAINERS * EXECS_PER_CONTAINER)
    execs: list[Future[str]] = [
        pool.submit(_exec, own_server, exec_containers[n % EXEC_CONTAINERS], command, stream=n < EXEC_CONTAINERS * 2)
        for n, command in enumerate(EXEC_SLEEPS)]

    def statuses() -> Counter[str]:
        return Counter(http.get(f"/v1/responses/{rid}").raise_for_status().json()["status"] for rid in ids)

    eventually(lambda: running_commands(EXEC_SLEEPS) == set(EXEC_SLEEPS), timeout=60, what="all 20 execs running")
    eventually(lambda: running_commands([TOOL_SLEEP]), timeout=60, what="a hosted tool call running")
    before = eventually(lambda: (seen := statuses())["in_progress"] and seen["queued"] and seen, timeout=60,
                        what="responses both running and queued")
    http.close()
    own_server.stop(signal.SIGKILL)
    upstream.reset()  # after the restart the model answers at once: queued responses finish quickly
    ended = [future.result(timeout=60) for future in execs]
    pool.shutdown()
    assert not any(outcome.startswith(("answered", "stream ended")) for outcome in ended), ended  # all cut off

    own_server.start()
    http = own_server.http()

    def all_ended() -> dict[str, dict[str, Any]] | None:
        bodies = {rid: http.get(f"/v1/responses/{rid}").raise_for_status().json() for rid in ids}
        return bodies if all(body["status"] in TERMINAL for body in bodies.values()) else None

    final = eventually(all_ended, timeout=120, what="every response to end after the restart")
    after = Counter(body["status"] for body in final.values())
    assert after == Counter(completed=RESPONSES), (before, after)  # running ones went on, queued ones ran
    restarted = [item for body in final.values() for item in body["output"]
                 if item["type"] == "shell_call_output" and "restarted" in json.dumps(item)]
    assert restarted, final  # a call the kill cut off was not run again: its output says why
    for rid, body in final.items():
        events = _replay(http, rid)  # a client streaming it again gets a whole stream with its end
        assert [e["sequence_number"] for e in events] == list(range(len(events))), (rid, events)
        assert events[-1]["type"] == f"response.{body['status']}", (rid, events[-3:])
        assert events[-1]["response"]["status"] == body["status"], (rid, events[-1])

    eventually(lambda: not running_commands([*EXEC_SLEEPS, TOOL_SLEEP]), timeout=60,
               what="no command of the killed server still running")
    for container_id in containers:
        done = http.post(f"/v1/containers/{container_id}/exec", timeout=60,
                         json={"commands": ["cat /root/state.txt"]}).raise_for_status().json()
        assert done["output"][0]["stdout"] == f"{container_id}\n", done
        files = http.get(f"/v1/containers/{container_id}/files").raise_for_status().json()["data"]
        kept = [f for f in files if f["path"].endswith("/kept.txt")]
        assert len(kept) == 1, files
        content = http.get(f"/v1/containers/{container_id}/files/{kept[0]['id']}/content").raise_for_status()
        assert content.content == container_id.encode()

        def audit(container_id: str = container_id) -> list[dict[str, Any]] | None:
            events = http.get(f"/v1/containers/{container_id}/audit",
                              params={"limit": 100, "order": "asc"}).raise_for_status().json()["data"]
            return events if any("cat /root/state.txt" in json.dumps(e) for e in events) else None

        events = eventually(audit, what=f"the audit of {container_id} to show the exec after the restart")
        commands = [e["command"] for e in events if e["type"] == "command"]
        assert commands[:1] == [f"echo {container_id} > /root/state.txt"], commands  # written before the crash
        assert len({event["id"] for event in events}) == len(events), events
    http.close()
