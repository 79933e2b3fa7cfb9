"""The Codex CLI, a widely used coding agent that speaks the Responses API, against Cove: a scripted model
calls Codex's own exec tool, Codex runs the command on this machine and sends the output back, and the
model answers from it.

Codex talks to Cove only (loopback): a custom model provider over plain HTTP/SSE (no WebSocket), no
update checks, analytics, feedback, apps or plugins (those reach out to the internet), web search off
(the session's server has no web search engine configured, so Codex's ``web_search`` tool would be a
400)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KEYS, Server
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

MODEL = "codex-scripted"
"""A name the upstream's ``/models`` does not list: its context window is Cove's default, which fits
Codex's first request (about 13,000 tokens of instructions and tools)."""


def codex_binary() -> Path | None:
    try:
        from codex_cli_bin import bundled_codex_path  # the openai-codex-cli-bin package (a dev dependency)
    except ImportError:
        return None
    try:
        return bundled_codex_path()
    except FileNotFoundError:
        return None


CODEX = codex_binary()


def codex_home(root: Path, server: Server) -> Path:
    home = root / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(f"""
model = "{MODEL}"
model_provider = "cove"
check_for_update_on_startup = false
web_search = "disabled"

[model_providers.cove]
name = "Cove"
base_url = "{server.url}/v1"
env_key = "COVE_CODEX_KEY"
wire_api = "responses"
supports_websockets = false

[analytics]
enabled = false

[feedback]
enabled = false

[features]
apps = false
plugins = false
remote_plugin = false
plugin_sharing = false
in_app_updates = false
tool_suggest = false
daemon_auto_start = false
""")
    return home


def tool_output(body: dict[str, Any]) -> str:
    """The newest tool result in a chat or a Responses request."""
    if "messages" in body:
        return next((message["content"] for message in reversed(body["messages"]) if message["role"] == "tool"), "")
    return next((str(item["output"]) for item in reversed(body["input"])
                 if item.get("type") == "function_call_output"), "")


def run_codex(server: Server, root: Path, prompt: str) -> str:
    """``codex exec`` with the prompt against ``server``; its stdout (the final answer)."""
    assert CODEX is not None
    work = root / "work"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENAI_", "CODEX_"))}
    env.update(CODEX_HOME=str(codex_home(root, server)), HOME=str(root), COVE_CODEX_KEY=KEYS["alpha"], NO_COLOR="1")
    done = subprocess.run([str(CODEX), "exec", "--skip-git-repo-check", "--sandbox", "danger-full-access",
                           "--cd", str(work), prompt],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


needs_codex = pytest.mark.skipif(CODEX is None, reason="the Codex CLI (openai-codex-cli-bin) is not installed")


@needs_codex
def test_codex_runs_a_tool_round_trip_through_cove(server: Server, upstream: ScriptedUpstream,
                                                   tmp_path: Path) -> None:
    upstream.script([
        Reply(text="Let me check.", tool_calls=[ToolCall("exec_command", json.dumps({"cmd": "echo cove-$((6*7))"}))]),
        lambda body: Reply(text=f"The command printed {tool_output(body).split('cove-')[-1][:2]}."),
    ])
    assert "The command printed 42." in run_codex(server, tmp_path, "What does echo cove-$((6*7)) print?")

    first, second = upstream.requests  # what Cove made of Codex's two requests, as a chat model reads them
    offered = {tool["function"]["name"] for tool in first["tools"]}
    assert {"exec_command", "multi_agent_v1__spawn_agent"} <= offered  # a namespace, flattened
    assert first["messages"][0]["role"] == "system" and "Codex" in first["messages"][0]["content"]
    assert [message["role"] for message in first["messages"]].count("system") == 1  # developer messages joined
    assert first["prompt_cache_key"]  # Codex's thread id, passed on
    call = second["messages"][-2]["tool_calls"][0]
    assert call["function"]["name"] == "exec_command" and "cove-42" in tool_output(second)


@needs_codex
def test_codex_runs_a_call_of_its_namespace_tool(server: Server, upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """Codex groups its sub-agent tools in the ``multi_agent_v1`` namespace: the model's call of the flat
    name reaches Codex as ``close_agent`` in that namespace, which Codex runs (refusing a made-up agent)."""
    upstream.script([Reply(tool_calls=[ToolCall("multi_agent_v1__close_agent", '{"target": "nobody"}')]),
                     lambda body: Reply(text="Codex said: " + tool_output(body))])
    answer = run_codex(server, tmp_path, "Close the agent called nobody.")
    assert "Codex said: invalid agent id nobody" in answer
    call = upstream.requests[1]["messages"][-2]["tool_calls"][0]
    assert call["function"]["name"] == "multi_agent_v1__close_agent"  # Codex sent it back namespaced


@needs_codex
def test_codex_through_cove_to_a_responses_upstream(own_server: Server, upstream: ScriptedUpstream,
                                                    tmp_path: Path) -> None:
    """The same round trip with a Responses API upstream behind Cove: Codex's namespace, developer
    messages, reasoning settings and prompt cache key reach it as Codex sent them."""
    own_server.stop()
    own_server.env["COVE_UPSTREAM_API"] = "responses"
    own_server.start()
    upstream.script([Reply(tool_calls=[ToolCall("exec_command", json.dumps({"cmd": "echo cove-$((6*7))"}))]),
                     lambda body: Reply(text=f"The command printed {tool_output(body).split('cove-')[-1][:2]}.")])
    assert "The command printed 42." in run_codex(own_server, tmp_path, "What does echo cove-$((6*7)) print?")
    first, second = upstream.requests
    assert any(tool["type"] == "namespace" and tool["name"] == "multi_agent_v1" for tool in first["tools"])
    assert [item.get("role") for item in first["input"][:2]] == ["developer", "developer"]
    assert first["reasoning"] == {"summary": "auto"} and first["prompt_cache_key"]
    assert "cove-42" in tool_output(second)
