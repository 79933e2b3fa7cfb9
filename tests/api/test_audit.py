"""The audit trail: every command, through the API and through hosted tools, with its response."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Server
from tests.helpers import run
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root


def test_commands_are_audited(client: openai.OpenAI, http: httpx.Client, server: Server,
                              upstream: ScriptedUpstream) -> None:
    cid = client.containers.create(name="audited").id
    run(http, cid, "echo first", "exit 3")
    upstream.reset()
    upstream.script([Reply(tool_calls=[ToolCall(name="shell", arguments='{"commands": ["echo from-tool"]}')]),
                     Reply(text="ok")])
    response = client.responses.create(model="scripted-model", input="go", tools=[{"type": "shell"}],  # type: ignore[list-item]
                                       extra_body={"container_id": cid})
    events = http.get(f"/v1/containers/{cid}/audit", params={"order": "asc"}).json()
    assert events["object"] == "list"
    commands = [(e["command"], e["outcome"], e["response_id"]) for e in events["data"]]
    assert commands == [("echo first", {"type": "exit", "exit_code": 0}, None),
                        ("exit 3", {"type": "exit", "exit_code": 3}, None),
                        ("echo from-tool", {"type": "exit", "exit_code": 0}, response.id)]
    assert all(e["type"] == "command" and e["duration_ms"] >= 0 for e in events["data"])
    with server.http("beta") as other:
        assert other.get(f"/v1/containers/{cid}/audit").status_code == 404
    client.containers.delete(cid)
    cove = Path(sys.executable).parent / "cove"
    lines = subprocess.run([str(cove), "audit", cid, "--json"], env=server.env, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert [json.loads(line)["command"] for line in lines] == ["echo first", "exit 3", "echo from-tool"]


def test_a_crash_right_after_commands_loses_no_audit_row(own_server: Server) -> None:
    """The server is killed (SIGKILL) within the flush interval of its last commands: the journal
    brings every one of them into the store at the next start, once."""
    with own_server.http() as http:
        cid = http.post("/v1/containers", json={"name": "crashy"}).raise_for_status().json()["id"]
        commands = [f"echo {n}" for n in range(30)]
        for command in commands:
            run(http, cid, command)
    own_server.stop(signal.SIGKILL)
    own_server.start()
    with own_server.http() as http:
        events = http.get(f"/v1/containers/{cid}/audit", params={"order": "asc", "limit": 100}).json()["data"]
        assert [e["command"] for e in events] == commands
    own_server.stop()  # a clean stop leaves no journal behind, and a start after it adds nothing
    assert not list((own_server.data_dir / "audit-journal").glob("*.jsonl"))
    own_server.start()
    with own_server.http() as http:
        events = http.get(f"/v1/containers/{cid}/audit", params={"order": "asc", "limit": 100}).json()["data"]
        assert [e["command"] for e in events] == commands
