"""Several models in one run: a chain of responses may switch between a Chat Completions upstream and a
Responses upstream at any turn, and each sees the whole history, hosted shell calls included, in its
own form."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, _server_env, data_dir, running_server
from tests.postgres import PostgresServer
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

SHELL: Any = {"type": "shell", "environment": {"type": "container_auto"}}


@pytest.fixture
def two_kinds(upstream: ScriptedUpstream, postgres: PostgresServer | None, tmp_path: Path) -> Iterator[Server]:
    """``chatty`` behind a Chat Completions upstream, ``native`` behind a Responses one (the same
    scripted server answers both APIs, in script order)."""
    models = tmp_path / "models.toml"
    models.write_text(f"""
[upstreams.chat]
url = "{upstream.url}"
api = "chat"

[upstreams.responses]
url = "{upstream.url}"
api = "responses"

[models.chatty]
upstream = "chat"

[models.native]
upstream = "responses"
""")
    with running_server(data_dir("cove-switch"), {**_server_env(upstream, postgres),
                                                   "COVE_MODELS_FILE": str(models)}) as srv:
        yield srv


def _shell_turn(model: str, turn: int) -> Reply:
    command = f"echo {turn} >> /mnt/data/log && cat /mnt/data/log"
    if model == "chatty":
        return Reply(tool_calls=[ToolCall(name="shell", arguments=json.dumps({"commands": [command]}),
                                          id=f"call_chat{turn}")])
    return Reply(native_items=[{"type": "shell_call", "id": f"sh_{turn}", "call_id": f"call_native{turn}",
                                "status": "completed", "action": {"commands": [command]}}])


def _history_of(request: dict[str, Any], api: str) -> tuple[list[str], list[str]]:
    """The commands the request's history shows as run, and the text the model reads of each one's
    output, in order (a Chat upstream reads a ``tool`` message, a Responses one the ``stdout``)."""
    if api == "chat":
        commands = [json.loads(call["function"]["arguments"])["commands"][0]
                    for message in request["messages"] for call in message.get("tool_calls") or []]
        return commands, [message["content"] for message in request["messages"] if message["role"] == "tool"]
    commands = [item["action"]["commands"][0] for item in request["input"] if item.get("type") == "shell_call"]
    return commands, [item["output"][0]["stdout"] for item in request["input"]
                      if item.get("type") == "shell_call_output"]


def test_five_turns_alternating_between_chat_and_responses_upstreams(two_kinds: Server,
                                                                     upstream: ScriptedUpstream) -> None:
    client = two_kinds.client()
    models = ["chatty", "native", "chatty", "native", "chatty"]
    previous = None
    container = None
    for turn, model in enumerate(models, start=1):
        upstream.reset()
        upstream.script([_shell_turn(model, turn), Reply(text=f"turn {turn} done")])
        response = client.responses.create(model=model, input=f"turn {turn}", tools=[SHELL],
                                           previous_response_id=previous)
        assert response.status == "completed", response.error
        assert response.output_text == f"turn {turn} done" and response.model == model
        output = next(item for item in response.output if item.type == "shell_call_output")
        assert output.output[0].stdout == "".join(f"{n}\n" for n in range(1, turn + 1))  # one container throughout
        container = container or response.model_extra["container_id"]  # type: ignore[index]
        assert response.model_extra["container_id"] == container  # type: ignore[index]
        # The model's second request of the turn carries every turn so far, its own kind of items or not.
        api = "chat" if model == "chatty" else "responses"
        last = upstream.received[-1]
        assert last.path.endswith("/chat/completions" if api == "chat" else "/responses")
        commands, outputs = _history_of(upstream.requests[-1], api)
        assert commands == [f"echo {n} >> /mnt/data/log && cat /mnt/data/log" for n in range(1, turn + 1)]
        assert len(outputs) == turn
        for n, seen in enumerate(outputs, start=1):
            assert "".join(f"{k}\n" for k in range(1, n + 1)) in seen, (turn, n, seen)
        previous = response.id
