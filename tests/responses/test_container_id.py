"""A response that used a container names it (``container_id``) however it ended: the container
holds what its commands did, so a client that got ``incomplete``, ``failed`` or ``cancelled`` can
still look inside, continue there or delete it."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.polling import eventually
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

MODEL = "scripted-model"
SHELL: Any = {"type": "shell", "environment": {"type": "container_auto"}}


def shell(*commands: str) -> Reply:
    return Reply(tool_calls=[ToolCall(name="shell", arguments=json.dumps({"commands": list(commands)}))])


def container_of(response: Any) -> str:
    """The response's ``container_id``, which is also where its shell call ran."""
    container_id = response.model_extra["container_id"]
    call = next(item.model_dump() for item in response.output if item.type == "shell_call")
    assert call["environment"] == {"type": "container_reference", "container_id": container_id}
    return str(container_id)


def test_incomplete_and_failed_responses_name_their_container(client: openai.OpenAI,
                                                              upstream: ScriptedUpstream) -> None:
    upstream.script([shell("touch /tmp/was-here"), Reply(text="cut off", finish_reason="length")])
    cut = client.responses.create(model=MODEL, input="go", tools=[SHELL])
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    container_id = container_of(cut)
    assert container_of(client.responses.retrieve(cut.id)) == container_id
    ran = client.post(f"/containers/{container_id}/exec", cast_to=object,
                      body={"commands": ["test -e /tmp/was-here && echo yes"]})
    assert ran["output"][0]["stdout"] == "yes\n"  # type: ignore[index]

    upstream.script([shell("true"), Reply(error=(400, "the upstream refused"))])
    failed = client.responses.create(model=MODEL, input="go", tools=[SHELL])
    assert failed.status == "failed" and failed.error is not None
    assert container_of(failed).startswith("cntr_")
    assert container_of(client.responses.retrieve(failed.id)) == container_of(failed)


def test_streamed_and_cancelled_responses_name_their_container(client: openai.OpenAI,
                                                               upstream: ScriptedUpstream) -> None:
    upstream.script([shell("true"), Reply(text="cut off", finish_reason="length")])
    with client.responses.stream(model=MODEL, input="go", tools=[SHELL]) as stream:
        ends = [event.response for event in stream if event.type == "response.incomplete"]
    assert len(ends) == 1 and container_of(ends[0]).startswith("cntr_")

    upstream.script([shell("true"), Reply(text="never read", delay=60)])
    job = client.responses.create(model=MODEL, input="go", tools=[SHELL], background=True)

    def ran() -> bool:
        return any(item.type == "shell_call_output" for item in client.responses.retrieve(job.id).output)

    eventually(ran, timeout=30, what="the background response to run its shell call")
    cancelled = client.responses.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert container_of(cancelled) == container_of(client.responses.retrieve(job.id))
