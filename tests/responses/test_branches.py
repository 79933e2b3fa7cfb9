"""Branching responses: continuations of one response each get the container as that response left it,
never the files another branch is changing (docs/snapshots.md)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from openai.types.responses import Response

from tests.conftest import Server, _server_env, data_dir, running_server
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall, last_user_text

pytestmark = pytest.mark.root

MODEL = "scripted-model"
SHELL: Any = {"type": "shell", "environment": {"type": "container_auto"}}


def _has_tool_output(body: dict[str, Any]) -> bool:
    """Whether this turn's command has run: the newest message is its output (earlier turns' are history)."""
    return bool(body.get("messages")) and body["messages"][-1].get("role") == "tool"


def _runs(command_of: dict[str, str]) -> Any:
    """A model turn that runs, for a request whose last user text is a key of ``command_of``, that
    command in the shell, and answers "done" once it has the output (any order, any interleaving)."""
    def turn(body: dict[str, Any]) -> Reply:
        if _has_tool_output(body):
            return Reply(text="done")
        command = command_of[last_user_text(body)]
        return Reply(tool_calls=[ToolCall(name="shell", arguments=json.dumps({"commands": [command]}))])
    return turn


def _stdout(response: Response) -> str:
    assert response.status == "completed", response.error
    output = next(item for item in response.output if item.type == "shell_call_output")
    return str(output.output[0].stdout)  # type: ignore[union-attr]


def _container(response: Response) -> str:
    return str(response.model_extra["container_id"])  # type: ignore[index]


def test_five_parallel_branches_each_see_only_their_own_changes(server: Server, upstream: ScriptedUpstream) -> None:
    upstream.reset()
    client = server.client()
    show = "cat /mnt/data/state; ls /mnt/data | grep only- | tr '\\n' ' '"
    upstream.script([_runs({"start": "echo base > /mnt/data/state"})] * 2)
    root = client.responses.create(model=MODEL, input="start", tools=[SHELL])
    assert root.output_text == "done"
    base = _container(root)

    branches = {f"branch {i}": f"echo {i} >> /mnt/data/state; touch /mnt/data/only-{i}; {show}" for i in range(5)}
    upstream.script([_runs(branches)] * 10)

    def branch(i: int) -> Response:
        return server.client().responses.create(model=MODEL, input=f"branch {i}", tools=[SHELL],
                                                 previous_response_id=root.id)

    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(branch, range(5)))
    containers = [_container(answer) for answer in answers]
    for i, answer in enumerate(answers):
        # Each sees the root's file with its own line only, and its own marker only.
        assert _stdout(answer) == f"base\n{i}\nonly-{i} ", (i, _stdout(answer))
    assert len(set(containers)) == 5
    assert containers.count(base) <= 1  # one branch may keep the root's container; the others got forks

    # A branch goes on in its own container, seeing its own files: nothing moved it on, so no new fork.
    upstream.script([_runs({"more": show})] * 2)
    onward = client.responses.create(model=MODEL, input="more", tools=[SHELL], previous_response_id=answers[2].id)
    assert _stdout(onward) == "base\n2\nonly-2 "
    assert _container(onward) == containers[2]

    # The root again, after all of that: its container has moved on (or is in use), so a fresh fork.
    upstream.script([_runs({"again": show})] * 2)
    again = client.responses.create(model=MODEL, input="again", tools=[SHELL], previous_response_id=root.id)
    assert _stdout(again) == "base\n"
    assert _container(again) not in containers

    # Commands through the Containers API do not move a container on: the chain sees them.
    with server.http() as http:
        http.post(f"/v1/containers/{containers[2]}/exec",
                  json={"commands": ["echo by-hand >> /mnt/data/state"]}).raise_for_status()
        upstream.script([_runs({"after exec": "cat /mnt/data/state"})] * 2)
        later = client.responses.create(model=MODEL, input="after exec", tools=[SHELL],
                                        previous_response_id=onward.id)
        assert _stdout(later) == "base\n2\nby-hand\n" and _container(later) == containers[2]

        # A branch whose container was deleted by its client ends there, with a clear 404.
        http.delete(f"/v1/containers/{containers[4]}").raise_for_status()
        upstream.script([_runs({"revive": show})] * 2)
        with pytest.raises(openai.NotFoundError, match="no longer exists"):
            client.responses.create(model=MODEL, input="revive", tools=[SHELL], previous_response_id=answers[4].id)
        upstream.reset()

        # The response snapshots are Cove's: not in the project's snapshot list.
        assert http.get("/v1/snapshots").json()["data"] == []
        # Deleting a response deletes its snapshot.
        snapshots_dir = server.data_dir / "disks" / "snapshots"
        before = len(list(snapshots_dir.iterdir()))
        client.responses.delete(later.id)
        assert len(list(snapshots_dir.iterdir())) == before - 1


def test_response_snapshots_are_pruned_after_their_time(upstream: ScriptedUpstream,
                                                        postgres: PostgresServer | None) -> None:
    env = {**_server_env(upstream, postgres), "COVE_RESPONSE_SNAPSHOT_HOURS": "0.0005"}  # 1.8 s
    upstream.reset()
    with running_server(data_dir("cove-prune"), env) as server:
        client = server.client()
        upstream.script([_runs({"start": "echo base > /mnt/data/state"})] * 2)
        root = client.responses.create(model=MODEL, input="start", tools=[SHELL])
        snapshots = server.data_dir / "disks" / "snapshots"
        assert len(list(snapshots.iterdir())) == 1
        eventually(lambda: not list(snapshots.iterdir()), timeout=30, what="the response snapshot to be pruned")
        # Without its snapshot a continuation uses the container as it is, moved on or not.
        upstream.script([_runs({"one": "echo one >> /mnt/data/state"})] * 2)
        first = client.responses.create(model=MODEL, input="one", tools=[SHELL], previous_response_id=root.id)
        upstream.script([_runs({"two": "cat /mnt/data/state"})] * 2)
        second = client.responses.create(model=MODEL, input="two", tools=[SHELL], previous_response_id=root.id)
        assert _stdout(second) == "base\none\n"
        assert _container(first) == _container(second) == _container(root)
