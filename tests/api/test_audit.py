"""The audit trail: every command, through the API and through hosted tools, with its response."""

from __future__ import annotations

import json
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
