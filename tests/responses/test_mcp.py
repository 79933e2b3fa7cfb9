"""Hosted MCP tools against a real MCP server on loopback (the ``mcp`` SDK's server), a real Cove and the
scripted model: listing once per chain, calls (quick, slow, failing), the SDK's events, approvals both
ways, the project's ``mcp_servers`` patterns, the header secret kept out of every response, log, audit
row and the store, and the ``openai-agents`` ``HostedMCPTool``."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from agents import Agent, HostedMCPTool, ModelSettings, OpenAIResponsesModel, Runner

from tests.conftest import Server, _server_env, data_dir, running_server
from tests.helpers import stream_response
from tests.mcp_server import MCP_HOST, McpTestServer
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall
from tests.wire_shapes import event_errors, response_errors

pytestmark = pytest.mark.root

MODEL = "scripted-model"
SECRET = "mcp-secret-4b1d9e7c"


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    srv = McpTestServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def mcp_cove(mcp_server: McpTestServer, upstream: ScriptedUpstream, postgres: PostgresServer | None,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Cove whose projects may reach the test server by name (mapped to loopback), and nothing else
    but public https servers."""
    projects = tmp_path_factory.mktemp("mcp") / "projects.toml"
    projects.write_text(f'[defaults]\nmcp_servers = ["http://{MCP_HOST}:{mcp_server.port}/", "*"]\n')
    env = {**_server_env(upstream, postgres), "COVE_PROJECTS_FILE": str(projects),
           "COVE_EGRESS_TEST_HOSTS": f"{MCP_HOST}=127.0.0.1,elsewhere.test=127.0.0.1"}
    with running_server(data_dir("cove-mcp"), env) as srv:
        yield srv


def _tool(server: McpTestServer, **more: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "calc", "server_url": server.url(), "require_approval": "never", **more}


def _function_names(body: dict[str, Any]) -> list[str]:
    return sorted(tool["function"]["name"] for tool in body.get("tools", []))


def test_listing_calls_and_events(mcp_cove: Server, mcp_server: McpTestServer, upstream: ScriptedUpstream) -> None:
    client = mcp_cove.client()
    upstream.script([Reply(tool_calls=[ToolCall("calc__add", json.dumps({"a": 2, "b": 40})),
                                       ToolCall("calc__broken", "{}")]),
                     Reply(text="42, and the other one broke")])
    with client.responses.stream(model=MODEL, input="add", tools=[_tool(mcp_server)]) as stream:  # type: ignore[list-item]
        kinds = [event.type for event in stream]
        first = stream.get_final_response()
    assert [item.type for item in first.output] == ["mcp_list_tools", "mcp_call", "mcp_call", "message"]
    listing, added, broken = first.output[0], first.output[1], first.output[2]
    assert listing.type == "mcp_list_tools" and sorted(t.name for t in listing.tools) == ["add", "broken", "slow"]
    assert added.type == "mcp_call" and added.output and added.output.startswith("42") and added.error is None
    assert added.server_label == "calc" and json.loads(added.arguments) == {"a": 2, "b": 40}
    assert broken.type == "mcp_call" and broken.status == "failed" and broken.output is None
    assert broken.error is not None and broken.error.type == "mcp_tool_execution_error"
    for kind in ("response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed",
                 "response.mcp_call_arguments.delta", "response.mcp_call_arguments.done",
                 "response.mcp_call.in_progress", "response.mcp_call.completed", "response.mcp_call.failed"):
        assert kind in kinds, kind
    # The chat upstream saw the server's tools as functions, and read both outputs back.
    assert _function_names(upstream.requests[0]) == ["calc__add", "calc__broken", "calc__slow"]
    tool_messages = [m["content"] for m in upstream.requests[1]["messages"] if m["role"] == "tool"]
    assert tool_messages[0].startswith("42") and tool_messages[1].startswith("Error")

    # The next response of the chain reuses the listing: no new mcp_list_tools, the tools still offered.
    upstream.script([Reply(tool_calls=[ToolCall("calc__slow", json.dumps({"seconds": 0.3}))]), Reply(text="done")])
    second = client.responses.create(model=MODEL, input="slowly", tools=[_tool(mcp_server)],  # type: ignore[list-item]
                                     previous_response_id=first.id)
    assert [item.type for item in second.output] == ["mcp_call", "message"]
    assert second.output[0].type == "mcp_call" and second.output[0].output == "slept 0.3"
    assert _function_names(upstream.requests[2]) == ["calc__add", "calc__broken", "calc__slow"]


def test_allowed_tools_narrow_the_listing(mcp_cove: Server, mcp_server: McpTestServer,
                                          upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="ok")])
    response = mcp_cove.client().responses.create(model=MODEL, input="hi", tools=[  # type: ignore[list-item]
        _tool(mcp_server, allowed_tools=["add"])])
    listing = response.output[0]
    assert listing.type == "mcp_list_tools" and [t.name for t in listing.tools] == ["add"]
    assert _function_names(upstream.requests[0]) == ["calc__add"]


def test_approvals_both_ways(mcp_cove: Server, mcp_server: McpTestServer, upstream: ScriptedUpstream) -> None:
    client = mcp_cove.client()
    tools: Any = [_tool(mcp_server, require_approval={"always": {"tool_names": ["add"]}})]
    upstream.script([Reply(tool_calls=[ToolCall("calc__add", json.dumps({"a": 1, "b": 2}))])])
    asked = client.responses.create(model=MODEL, input="add", tools=tools)
    request = asked.output[-1]
    assert request.type == "mcp_approval_request" and request.name == "add" and asked.status == "completed"
    calls_before = len(upstream.requests)

    # Approved: Cove makes the call, its mcp_call names the request, the model reads the output.
    upstream.script([Reply(text="it is 3")])
    approved = client.responses.create(model=MODEL, previous_response_id=asked.id, tools=tools, input=[
        {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}])
    call = approved.output[0]
    assert call.type == "mcp_call" and call.approval_request_id == request.id and call.output
    assert call.output.startswith("3")
    assert approved.output_text == "it is 3" and len(upstream.requests) == calls_before + 1

    # Refused: nothing runs, and the model reads that the user did not approve it.
    upstream.script([Reply(tool_calls=[ToolCall("calc__add", json.dumps({"a": 5, "b": 5}))])])
    again = client.responses.create(model=MODEL, input="again", tools=tools, previous_response_id=approved.id)
    second = again.output[-1]
    assert second.type == "mcp_approval_request"
    upstream.script([Reply(text="fine, I won't")])
    refused = client.responses.create(model=MODEL, previous_response_id=again.id, tools=tools, input=[
        {"type": "mcp_approval_response", "approval_request_id": second.id, "approve": False, "reason": "no"}])
    assert [item.type for item in refused.output] == ["message"]
    outputs = [m["content"] for m in upstream.requests[-1]["messages"] if m["role"] == "tool"]
    assert outputs[-1].startswith("Not run: the user did not approve") and "no" in outputs[-1]

    # An answer to a request the chain does not hold is a 400.
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, previous_response_id=again.id, tools=tools, input=[
            {"type": "mcp_approval_response", "approval_request_id": "mcpr_nothing", "approve": True}])
    assert caught.value.body["param"] == "input[0].approval_request_id"  # type: ignore[index]


def test_a_url_outside_the_patterns_is_refused(mcp_cove: Server, mcp_server: McpTestServer) -> None:
    client = mcp_cove.client()
    for url in (f"http://elsewhere.test:{mcp_server.port}/mcp", f"http://127.0.0.1:{mcp_server.port}/mcp",
                "http://public.example/mcp"):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=MODEL, input="hi", tools=[  # type: ignore[list-item]
                {"type": "mcp", "server_label": "x", "server_url": url, "require_approval": "never"}])
        body: Any = caught.value.body
        assert body["param"] == "tools[0].server_url" and body["code"] == "url_not_allowed", url


def test_a_public_pattern_does_not_reach_loopback(mcp_cove: Server, upstream: ScriptedUpstream) -> None:
    """``*`` allows any https URL of a public host: a name resolving to loopback is refused at connect
    time (the listing fails, saying why), and the response goes on."""
    upstream.script([Reply(text="no tools then")])
    response = mcp_cove.client().responses.create(model=MODEL, input="hi", tools=[  # type: ignore[list-item]
        {"type": "mcp", "server_label": "x", "server_url": "https://elsewhere.test/mcp", "require_approval": "never"}])
    listing = response.output[0]
    assert listing.type == "mcp_list_tools" and listing.error and listing.tools == []
    assert response.output_text == "no tools then"


def test_the_header_secret_is_never_shown(mcp_cove: Server, mcp_server: McpTestServer,
                                          upstream: ScriptedUpstream) -> None:
    client = mcp_cove.client()
    upstream.script([Reply(tool_calls=[ToolCall("calc__add", json.dumps({"a": 1, "b": 1}))]), Reply(text="2")])
    tools: Any = [_tool(mcp_server, authorization=SECRET, headers={"X-Api-Key": SECRET + "-h"})]
    with client.responses.stream(model=MODEL, input="add", tools=tools) as stream:
        events = [event.model_dump_json(warnings=False) for event in stream]
        response = stream.get_final_response()
    assert mcp_server.saw(f"Bearer {SECRET}") and mcp_server.saw(SECRET + "-h")  # the server got them
    stored = client.responses.retrieve(response.id).model_dump_json()
    shown = [*events, response.model_dump_json(warnings=False), stored,
             json.dumps([item.model_dump() for item in client.responses.input_items.list(response.id)])]
    assert not any(SECRET in text for text in shown)
    assert json.loads(response.model_dump_json(warnings=False))["tools"][0]["authorization"] == "[redacted]"
    with mcp_cove.http() as http:
        streamed = http.get(f"/v1/responses/{response.id}", params={"stream": "true"}).text
    assert SECRET not in streamed
    log = mcp_cove.log.read_text(errors="replace")
    assert SECRET not in log
    if os.environ.get("COVE_TEST_DB") != "postgres":  # SQLite: every table, every column (the same code)
        rows = _all_text(mcp_cove.data_dir / "cove.db")
        assert SECRET not in rows and "mcp_call" in rows  # the call was audited, without the secret


def test_every_call_is_audited(mcp_cove: Server, mcp_server: McpTestServer, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall("calc__add", json.dumps({"a": 1, "b": 1})),
                                       ToolCall("calc__broken", "{}")]), Reply(text="ok")])
    response = mcp_cove.client().responses.create(model=MODEL, input="go", tools=[_tool(mcp_server)])  # type: ignore[list-item]
    database = mcp_cove.data_dir / "cove.db"
    if os.environ.get("COVE_TEST_DB") == "postgres":
        pytest.skip("the audit rows are read from SQLite here")
    def rows() -> list[dict[str, Any]]:
        with sqlite3.connect(database) as db:
            found = db.execute("SELECT data FROM audit_events WHERE kind = 'mcp_call' AND response_id = ?",
                               (response.id,)).fetchall()
        return [json.loads(data) for (data,) in found]

    events = eventually(lambda: len(rows()) == 2 and rows(), what="both calls in the audit trail")
    assert sorted((e["tool"], e["outcome"]) for e in events) == [("add", "completed"),
                                                                 ("broken", "mcp_tool_execution_error")]
    assert all(e["server"] == f"{MCP_HOST}:{mcp_server.port}" and e["duration_ms"] >= 0 for e in events)
    # The operator reads them with `cove audit RESPONSE_ID`.
    cove = Path(sys.executable).parent / "cove"
    shown = subprocess.run([str(cove), "audit", response.id, "--json"], env=mcp_cove.env, capture_output=True,
                           text=True, check=True, timeout=60).stdout
    lines = [json.loads(line) for line in shown.splitlines()]
    assert sorted(line["tool"] for line in lines if line["type"] == "mcp_call") == ["add", "broken"]


def test_hosted_mcp_tool_of_the_agents_sdk(mcp_cove: Server, mcp_server: McpTestServer,
                                           upstream: ScriptedUpstream) -> None:
    """The agents SDK's ``HostedMCPTool`` with an approval callback: Cove asks, the SDK approves, Cove calls."""
    upstream.script([Reply(tool_calls=[ToolCall("calc__add", json.dumps({"a": 20, "b": 22}))]),
                     Reply(text="The sum is 42.")])
    approved: list[str] = []

    def approve(request: Any) -> Any:
        approved.append(request.data.name)
        return {"approve": True}

    async def run() -> Any:
        client = openai.AsyncOpenAI(base_url=f"{mcp_cove.url}/v1", api_key="test-key-alpha", max_retries=0)
        agent = Agent(name="calc", instructions="Use the calculator.",
                      model=OpenAIResponsesModel(model=MODEL, openai_client=client),
                      model_settings=ModelSettings(store=True),
                      tools=[HostedMCPTool(tool_config={"type": "mcp", "server_label": "calc",  # type: ignore[typeddict-item]
                                                        "server_url": mcp_server.url(), "require_approval": "always"},
                                           on_approval_request=approve)])
        try:
            return await Runner.run(agent, "What is 20 + 22?")
        finally:
            await client.close()

    result = asyncio.run(run())
    assert approved == ["add"]
    assert result.final_output == "The sum is 42."
    kinds = [item.type for item in result.new_items]
    assert "mcp_list_tools_item" in kinds and "mcp_approval_request_item" in kinds


def _all_text(database: Path) -> str:
    """Every text value of every table of a SQLite database, joined (to look for a secret in clear)."""
    with sqlite3.connect(database) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(str(value) for table in tables for row in db.execute(f'SELECT * FROM "{table}"')
                         for value in row)


STDIO_SERVER = r'''
import json, os, sys
for line in sys.stdin:
    message = json.loads(line)
    if "id" not in message:
        continue  # a notification
    method, result = message.get("method"), None
    if method == "initialize":
        result = {"protocolVersion": message["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "in-box", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "where", "description": "Says where it runs.",
                             "inputSchema": {"type": "object", "properties": {}}}]}
    elif method == "tools/call":
        text = f"cove-init here: {os.path.exists('/.cove')}, pid {os.getpid()}"
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    reply = {"jsonrpc": "2.0", "id": message["id"]}
    if result is None:
        reply["error"] = {"code": -32601, "message": f"no method {method}"}
    else:
        reply["result"] = result
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
'''


def test_a_stdio_server_inside_the_container(mcp_cove: Server, upstream: ScriptedUpstream) -> None:
    """Cove's extension: ``command`` runs the MCP server in the response's container, over stdio."""
    client = mcp_cove.client()
    tools: Any = [{"type": "mcp", "server_label": "box", "command": ["python3", "-c", STDIO_SERVER],
                   "require_approval": "never"}]
    upstream.script([Reply(tool_calls=[ToolCall("box__where", "{}")]), Reply(text="inside")])
    response = client.responses.create(model=MODEL, input="where?", tools=tools)
    assert response.output[0].type == "mcp_list_tools" and not response.output[0].error, response.output[0]
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    call = response.output[1]
    assert call.type == "mcp_call" and call.output and call.output.startswith("cove-init here: True"), call
    assert response.container_id  # it ran in the response's container
    with pytest.raises(openai.BadRequestError) as caught:  # one of server_url or command, not both
        client.responses.create(model=MODEL, input="x", tools=[{**tools[0], "server_url": "https://a.example/"}])
    assert caught.value.body["param"] == "tools[0].server_url"  # type: ignore[index]


def test_a_responses_upstream_gets_functions_and_a_background_response_its_secret(
        mcp_cove: Server, mcp_server: McpTestServer, upstream: ScriptedUpstream) -> None:
    """Cove holds the connection whatever the upstream: a Responses upstream is offered the server's tools
    as functions and reads the calls back as function calls. A queued background response opens the
    header it keeps sealed in the store when it runs."""
    mcp_cove.stop()
    mcp_cove.env["COVE_UPSTREAM_API"] = "responses"
    mcp_cove.start()
    try:
        client = mcp_cove.client()
        token = SECRET + "-background"
        upstream.script([Reply(tool_calls=[ToolCall("calc__add", json.dumps({"a": 3, "b": 4}))]), Reply(text="7")])
        job = client.responses.create(model=MODEL, input="add", background=True,
                                      tools=[_tool(mcp_server, authorization=token)])  # type: ignore[list-item]
        done = eventually(lambda: (r := client.responses.retrieve(job.id)).status == "completed" and r,
                          what="the background response to complete")
        assert [item.type for item in done.output] == ["mcp_list_tools", "mcp_call", "message"]
        assert mcp_server.saw(f"Bearer {token}") and token not in done.model_dump_json()
        offered = sorted(tool["name"] for tool in upstream.requests[0]["tools"])
        assert offered == ["calc__add", "calc__broken", "calc__slow"]
        read_back = [item for item in upstream.requests[1]["input"] if item.get("type") == "function_call_output"]
        assert read_back and read_back[0]["output"].startswith("7")
    finally:
        mcp_cove.stop()
        del mcp_cove.env["COVE_UPSTREAM_API"]
        mcp_cove.start()


def test_wire_shapes(mcp_cove: Server, mcp_server: McpTestServer, upstream: ScriptedUpstream) -> None:
    """Every MCP item and event Cove streams fits the ``openai`` SDK's types (and the Open Responses
    document where one is at hand): a listing, a completed and a failed call, an approval request."""
    tools = [_tool(mcp_server, require_approval={"always": {"tool_names": ["slow"]}})]
    upstream.script([Reply(tool_calls=[ToolCall("calc__add", json.dumps({"a": 1, "b": 2})),
                                       ToolCall("calc__broken", "{}")]),
                     Reply(tool_calls=[ToolCall("calc__slow", json.dumps({"seconds": 0.1}))])])
    with mcp_cove.http() as http:
        events = stream_response(http, {"model": MODEL, "input": "go", "tools": tools})
    errors = [error for event in events for error in event_errors(event)]
    assert not errors, "\n".join(errors)
    final = events[-1]["response"]
    assert not response_errors(final), response_errors(final)
    assert [item["type"] for item in final["output"]] == ["mcp_list_tools", "mcp_call", "mcp_call",
                                                          "mcp_approval_request"]


def test_an_older_server_over_sse(mcp_cove: Server, mcp_server: McpTestServer, upstream: ScriptedUpstream) -> None:
    """A server that only speaks the SSE transport refuses Streamable HTTP; Cove connects over SSE."""
    upstream.script([Reply(tool_calls=[ToolCall("old__add", json.dumps({"a": 1, "b": 1}))]), Reply(text="2")])
    response = mcp_cove.client().responses.create(model=MODEL, input="add", tools=[  # type: ignore[list-item]
        {"type": "mcp", "server_label": "old", "server_url": mcp_server.url("/legacy/sse"),
         "require_approval": "never"}])
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    call = response.output[1]
    assert call.type == "mcp_call" and call.output and call.output.startswith("2")
