"""Background responses across projects: served in turn, each project within its quotas."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import Server
from tests.polling import eventually
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

MODEL = "scripted-model"
SLOW = Reply(text="slow " * 400, chunk_delay=0.05)
"""About 25 s of streaming: the first response holds its worker until the test cancels it."""
SHELL = {"type": "shell", "environment": {"type": "container_auto"}}


def _restart(server: Server, projects: str, workers: int) -> tuple[openai.OpenAI, openai.OpenAI]:
    rules = server.data_dir.with_name(server.data_dir.name + "-projects.toml")
    rules.write_text(projects)
    server.stop()
    server.env.update(COVE_PROJECTS_FILE=str(rules), COVE_BACKGROUND_WORKERS=str(workers))
    server.start()
    return server.client("alpha"), server.client("beta")


def _status(client: openai.OpenAI, response_id: str) -> str:
    return str(client.responses.retrieve(response_id).status)


def _finished(client: openai.OpenAI, *ids: str) -> bool:
    return all(_status(client, i) in ("completed", "cancelled") for i in ids)


def _hold_the_worker(client: openai.OpenAI, upstream: ScriptedUpstream) -> str:
    upstream.script([SLOW])
    first = client.responses.create(model=MODEL, input="a0", background=True).id
    eventually(lambda: upstream.requests, what="the first response's model call")
    return first


def test_one_project_queueing_many_does_not_delay_another(own_server: Server, upstream: ScriptedUpstream) -> None:
    alpha, beta = _restart(own_server, "", workers=1)
    first = _hold_the_worker(alpha, upstream)
    queued = [alpha.responses.create(model=MODEL, input=f"a{n}", background=True).id for n in range(1, 7)]
    other = beta.responses.create(model=MODEL, input="b0", background=True).id
    alpha.responses.cancel(first)
    eventually(lambda: _finished(alpha, *queued) and _finished(beta, other), what="every response to finish")
    order = [request["messages"][-1]["content"] for request in upstream.requests]
    # Arrival order would run b0 last; in turns it runs right after alpha's next one.
    assert order == ["a0", "a1", "b0", "a2", "a3", "a4", "a5", "a6"]


def test_background_quotas(own_server: Server, upstream: ScriptedUpstream) -> None:
    alpha, beta = _restart(own_server, "[projects.alpha]\nbackground_running = 1\nbackground_queued = 2\n",
                           workers=2)
    first = _hold_the_worker(alpha, upstream)
    waiting = [alpha.responses.create(model=MODEL, input=f"a{n}", background=True).id for n in (1, 2)]
    with pytest.raises(openai.RateLimitError) as info:
        alpha.responses.create(model=MODEL, input="a3", background=True)
    assert (info.value.code, info.value.body["param"]) == ("quota_exceeded", "background_queued")  # type: ignore[index]
    assert alpha.responses.create(model=MODEL, input="now").output_text == "echo: now"  # only background waits
    other = beta.responses.create(model=MODEL, input="b0", background=True).id
    eventually(lambda: _status(beta, other) == "completed", what="beta's response, on the free worker")
    assert [_status(alpha, i) for i in waiting] == ["queued", "queued"]  # alpha runs one at a time
    alpha.responses.cancel(first)
    eventually(lambda: _finished(alpha, *waiting), what="alpha's queued responses, one after the other")


def test_a_queued_response_that_finds_no_room_fails_naming_the_quota(own_server: Server,
                                                                     upstream: ScriptedUpstream) -> None:
    alpha, _beta = _restart(own_server, "[projects.alpha]\nrunning_containers = 1\n", workers=1)
    first = _hold_the_worker(alpha, upstream)
    waiting = alpha.responses.create(model=MODEL, input="use the shell", tools=[SHELL],  # type: ignore[list-item]
                                     background=True).id  # room for its container when created ...
    alpha.containers.create(name="the last slot")  # ... but not when it runs
    upstream.script([Reply(tool_calls=[ToolCall(name="shell", arguments=json.dumps({"commands": ["true"]}))])])
    alpha.responses.cancel(first)
    eventually(lambda: _status(alpha, waiting) == "failed", what="the queued response to fail")
    error = alpha.responses.retrieve(waiting).error
    assert error is not None and error.code == "quota_exceeded" and "running_containers" in error.message
