"""Skills in containers end to end: uploaded through the SDK, named in a ``container_auto`` shell (by
reference and version, or inline), given to ``containers.create``; a scripted model reads ``SKILL.md``
and runs the skill's script; the mount is read-only; a client-side shell is told of local skills."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import KEYS, Server
from tests.helpers import greet_skill
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

MODEL = "scripted-model"
DATA = "printf 'a,1\\nb,2.5\\nc,3\\n' > /tmp/data.csv"
RUN = "python3 /skills/csv-stats/scripts/sum.py /tmp/data.csv"
_SYSCALL = ("python3 -c \"import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); r = libc.{}; "
            "print(os.strerror(ctypes.get_errno()) if r else 'done'); sys.exit(1 if r else 0)\"")
REMOUNT_RW = _SYSCALL.format("mount(b'none', b'/skills', None, 32 | 4096, None)")  # MS_REMOUNT | MS_BIND, no MS_RDONLY
UNMOUNT = _SYSCALL.format("umount2(b'/skills', 2)")  # MNT_DETACH: what is under it would be writable


def shell(*commands: str) -> Reply:
    return Reply(tool_calls=[ToolCall(name="shell", arguments=json.dumps({"commands": list(commands)}))])


def outputs(response: Any) -> list[dict[str, Any]]:
    return [entry for item in response.output if item.type == "shell_call_output" for entry in
            item.model_dump()["output"]]


def skill_files(description: str, scale: int) -> list[tuple[str, bytes]]:
    manifest = (f"---\nname: csv-stats\ndescription: {description}\n---\n"
                "Sum the second column: `python3 scripts/sum.py FILE`.\n").encode()
    script = (f"import csv, sys\nrows = csv.reader(open(sys.argv[1]))\n"
              f"print({scale} * sum(float(row[1]) for row in rows))\n").encode()
    return [("csv-stats/SKILL.md", manifest), ("csv-stats/scripts/sum.py", script)]


def auto(*skills: dict[str, Any]) -> dict[str, Any]:
    return {"type": "shell", "environment": {"type": "container_auto", "skills": list(skills)}}


@pytest.fixture
def skill(client: openai.OpenAI) -> Iterator[str]:
    """A skill with two versions: 1 sums the column, 2 (not the default) sums it times ten."""
    created = client.skills.create(files=skill_files("Sums the second column of a CSV file.", 1))
    client.skills.versions.create(created.id, files=skill_files("Sums it, times ten.", 10))
    yield created.id
    client.skills.delete(created.id)


def test_a_scripted_model_runs_a_skill_script(client: openai.OpenAI, upstream: ScriptedUpstream, skill: str) -> None:
    upstream.script([shell("cat /skills/csv-stats/SKILL.md", DATA, RUN), Reply(text="The sum is 6.5.")])
    response = client.responses.create(model=MODEL, input="Sum the CSV.", tools=[  # type: ignore[list-item]
        auto({"type": "skill_reference", "skill_id": skill})])
    cat, _data, run = outputs(response)
    assert "Sum the second column" in cat["stdout"]
    assert run["stdout"] == "6.5\n", run
    described = upstream.requests[0]["tools"][0]["function"]["description"]
    assert "- csv-stats (/skills/csv-stats/SKILL.md): Sums the second column of a CSV file." in described
    container_id = response.model_extra["container_id"]  # type: ignore[index]
    events = httpx.get(f"{client.base_url}containers/{container_id}/audit",
                       headers={"Authorization": f"Bearer {client.api_key}"}).json()["data"]
    assert [(e["name"], e["path"], e["files"]) for e in events if e["type"] == "skill"] == [
        ("csv-stats", "/skills/csv-stats", 2)]


def test_the_chains_container_gets_the_skills_of_a_later_request(client: openai.OpenAI, upstream: ScriptedUpstream,
                                                                  skill: str) -> None:
    upstream.script([shell(DATA, "ls /skills"), Reply(text="no skills yet")])
    first = client.responses.create(model=MODEL, input="Prepare.", tools=[auto()])  # type: ignore[list-item]
    assert outputs(first)[1]["stdout"] == ""
    upstream.script([shell(RUN), Reply(text="summed")])
    second = client.responses.create(model=MODEL, input="Sum it.", previous_response_id=first.id, tools=[  # type: ignore[list-item]
        auto({"type": "skill_reference", "skill_id": skill, "version": 1})])
    assert second.model_extra["container_id"] == first.model_extra["container_id"]  # type: ignore[index]
    assert outputs(second)[0]["stdout"] == "6.5\n"
    upstream.script([Reply(text="still there")])  # a later turn that names no skill is told of the container's
    client.responses.create(model=MODEL, input="Again?", previous_response_id=second.id, tools=[auto()])  # type: ignore[list-item]
    assert "csv-stats (/skills/csv-stats/SKILL.md)" in upstream.requests[-1]["tools"][0]["function"]["description"]


def test_a_version_is_chosen_by_number(client: openai.OpenAI, upstream: ScriptedUpstream, skill: str) -> None:
    upstream.script([shell(DATA, RUN), Reply(text="65")])
    response = client.responses.create(model=MODEL, input="Sum it.", tools=[  # type: ignore[list-item]
        auto({"type": "skill_reference", "skill_id": skill, "version": "2"})])
    assert outputs(response)[1]["stdout"] == "65.0\n"
    assert "Sums it, times ten." in upstream.requests[0]["tools"][0]["function"]["description"]


def test_the_mount_is_read_only(client: openai.OpenAI, upstream: ScriptedUpstream, skill: str) -> None:
    attacks = ["touch /skills/csv-stats/new", "echo evil > /skills/csv-stats/SKILL.md",
               "rm -rf /skills/csv-stats", "chmod 777 /skills/csv-stats/scripts/sum.py",
               "mkdir /skills/other", REMOUNT_RW, UNMOUNT]
    upstream.script([shell(*attacks, "cat /skills/csv-stats/SKILL.md; ls /skills"), Reply(text="tried")])
    response = client.responses.create(model=MODEL, input="Break it.", tools=[  # type: ignore[list-item]
        auto({"type": "skill_reference", "skill_id": skill})])
    results = outputs(response)
    for attack, result in zip(attacks, results, strict=False):
        assert result["outcome"]["exit_code"] != 0, (attack, result)
    assert [result["stdout"] for result in results[-3:-1]] == ["Operation not permitted\n"] * 2  # the syscalls ran
    assert "Sum the second column" in results[-1]["stdout"]
    assert results[-1]["stdout"].endswith("csv-stats\n")


def test_an_inline_skill(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    inline = greet_skill()
    upstream.script([shell("/skills/greet/hello.sh"), Reply(text="greeted")])
    response = client.responses.create(model=MODEL, input="Greet.", tools=[auto(inline)])  # type: ignore[list-item]
    assert outputs(response)[0]["stdout"] == "hello from a skill\n"


def test_skills_given_to_a_new_container(client: openai.OpenAI, upstream: ScriptedUpstream, skill: str) -> None:
    container = client.containers.create(name="with-skills", skills=[
        {"type": "skill_reference", "skill_id": skill, "version": "latest"}])
    try:
        answer = httpx.post(f"{client.base_url}containers/{container.id}/exec",
                            headers={"Authorization": f"Bearer {client.api_key}"}, timeout=60,
                            json={"commands": [DATA, RUN]}).json()
        assert answer["output"][1]["stdout"] == "65.0\n", answer
        upstream.script([shell(RUN), Reply(text="done")])  # a shell naming the container is told of its skills
        reference = {"type": "shell", "environment": {"type": "container_reference", "container_id": container.id}}
        response = client.responses.create(model=MODEL, input="Sum.", tools=[reference])  # type: ignore[list-item]
        assert outputs(response)[0]["stdout"] == "65.0\n"
        assert "- csv-stats (/skills/csv-stats/SKILL.md): Sums it, times ten." in (
            upstream.requests[0]["tools"][0]["function"]["description"])
    finally:
        client.containers.delete(container.id)


def test_bad_skill_entries_are_refused_before_anything_runs(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model=MODEL, input="x", tools=[  # type: ignore[list-item]
            auto({"type": "skill_reference", "skill_id": "skill_nope"})])
    assert missing.value.body["param"] == "tools[0].environment.skills[0].skill_id"  # type: ignore[index]
    bad_zip = {"type": "inline", "name": "x", "description": "y",
               "source": {"type": "base64", "media_type": "application/zip", "data": "bm9wZQ=="}}
    with pytest.raises(openai.BadRequestError, match="not a zip") as refused:
        client.responses.create(model=MODEL, input="x", tools=[auto(bad_zip)])  # type: ignore[list-item]
    assert refused.value.body["param"] == "tools[0].environment.skills[0].source.data"  # type: ignore[index]
    assert upstream.requests == []


def test_local_skills_are_told_to_the_model_and_the_call_returns(client: openai.OpenAI,
                                                                 upstream: ScriptedUpstream) -> None:
    local = {"type": "shell", "environment": {"type": "local", "skills": [
        {"name": "deploy", "description": "Deploys the site.", "path": "/home/me/skills/deploy"}]}}
    upstream.script([shell("cat /home/me/skills/deploy/SKILL.md")])
    response = client.responses.create(model=MODEL, input="Deploy.", tools=[local])  # type: ignore[list-item]
    call = response.output[0].model_dump()
    assert call["type"] == "shell_call" and call["environment"] == {"type": "local"}
    assert "- deploy (/home/me/skills/deploy/SKILL.md): Deploys the site." in (
        upstream.requests[0]["tools"][0]["function"]["description"])


def test_a_responses_upstream_is_told_of_the_skills_as_local_ones(own_server: Server,
                                                                   upstream: ScriptedUpstream) -> None:
    own_server.stop()
    own_server.env["COVE_UPSTREAM_API"] = "responses"
    own_server.start()
    client = own_server.client()
    created = client.skills.create(files=skill_files("Sums the second column of a CSV file.", 1))
    native_call = {"type": "shell_call", "id": "sh_up", "call_id": "call_native", "status": "completed",
                   "action": {"commands": [DATA, RUN]}, "environment": {"type": "local"}}
    upstream.script([Reply(native_items=[native_call]), Reply(text="ran natively")])
    response = client.responses.create(model=MODEL, input="Sum it.", tools=[  # type: ignore[list-item]
        auto({"type": "skill_reference", "skill_id": created.id})])
    assert upstream.requests[0]["tools"] == [{"type": "shell", "environment": {"type": "local", "skills": [
        {"name": "csv-stats", "description": "Sums the second column of a CSV file.", "path": "/skills/csv-stats"}]}}]
    assert outputs(response)[1]["stdout"] == "6.5\n"


def test_an_agents_sdk_shell_tool_with_a_skill(server: Server, upstream: ScriptedUpstream, skill: str) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, ShellTool, set_tracing_disabled

    set_tracing_disabled(True)  # the SDK would otherwise export traces to a remote service
    upstream.script([shell(DATA, RUN), Reply(text="The sum is 6.5.")])

    async def main() -> str:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEYS["alpha"]) as client:
            tool = ShellTool(environment={"type": "container_auto", "skills": [
                {"type": "skill_reference", "skill_id": skill, "version": "1"}]})
            agent = Agent(name="csv", instructions="Use the csv-stats skill.", tools=[tool],
                          model=OpenAIResponsesModel(model=MODEL, openai_client=client))
            return str((await Runner.run(agent, "Sum the CSV.")).final_output)

    assert asyncio.run(main()) == "The sum is 6.5."
    tool_messages = [m for m in upstream.requests[-1]["messages"] if m["role"] == "tool"]
    assert "6.5" in tool_messages[-1]["content"]
    assert "csv-stats (/skills/csv-stats/SKILL.md)" in upstream.requests[0]["tools"][0]["function"]["description"]
