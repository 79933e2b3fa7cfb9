"""Compaction through the SDKs: ``responses.compact()``, compaction items as input, ``context_management``
during a run, and the agents SDK's ``OpenAIResponsesCompactionSession``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from cove.agent.compaction import SUMMARY_HEADER, SUMMARY_PROMPT
from tests.conftest import KEYS, Server
from tests.scripted_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.root

MODEL = "scripted-model"


def _texts(messages: list[dict[str, Any]], role: str) -> list[str]:
    def text(content: Any) -> str:
        return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)
    return [text(message["content"]) for message in messages if message["role"] == role]


def _as_input(items: list[Any]) -> list[dict[str, Any]]:
    """Output items sent back as input, as clients do (user messages come as output messages)."""
    return [item.model_dump(exclude_none=True, warnings=False) for item in items]


def test_compact_a_chain_by_previous_response_id(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="Day one: the old town."), Reply(text="Day two: the food market."),
                     Reply(text="SUMMARY: a Lyon trip; day one old town, day two food market.")])
    first = client.responses.create(model=MODEL, input="Plan two days in Lyon.")
    second = client.responses.create(model=MODEL, input="What about day two?", previous_response_id=first.id)

    compacted = client.responses.compact(model=MODEL, previous_response_id=second.id)

    assert compacted.object == "response.compaction" and compacted.id.startswith("resp_")
    assert [item.type for item in compacted.output] == ["message", "message", "compaction"]
    users = compacted.output[:2]
    assert [(m.role, m.content[0].text) for m in users] == [  # type: ignore[union-attr]
        ("user", "Plan two days in Lyon."), ("user", "What about day two?")]
    sealed = compacted.output[2]
    assert sealed.type == "compaction" and sealed.id.startswith("cmp_")
    assert sealed.encrypted_content and "SUMMARY" not in sealed.encrypted_content  # opaque, not the text
    assert compacted.usage.total_tokens > 0
    asked = upstream.requests[-1]["messages"]  # the summary was asked of the same model, seeing the chain
    assert _texts(asked, "assistant") == ["Day one: the old town.", "Day two: the food market."]
    assert _texts(asked, "user")[-1] == SUMMARY_PROMPT and "tools" not in upstream.requests[-1]


def test_compacted_window_round_trips_as_input(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="SUMMARY-42: the bug is an off-by-one in parse()."), Reply(text="parse()")])
    compacted = client.responses.compact(model=MODEL, instructions="You fix bugs.", input=[
        {"role": "user", "content": "Find the bug in app.py."},
        {"role": "assistant", "content": "I read app.py: parse() skips the last line."},
        {"type": "function_call", "call_id": "call_1", "name": "run_tests", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "1 failed"},
        {"role": "user", "content": "Fix it later; remember it."}])
    assert upstream.requests[-1]["messages"][0] == {"role": "system", "content": "You fix bugs."}
    assert [item.type for item in compacted.output] == ["message", "message", "compaction"]

    answer = client.responses.create(model=MODEL, store=False, input=[
        *_as_input(compacted.output), {"role": "user", "content": "Which function was it?"}])

    assert answer.output_text == "parse()"
    seen = upstream.requests[-1]["messages"]
    assert _texts(seen, "user") == ["Find the bug in app.py.", "Fix it later; remember it.",
                                    SUMMARY_HEADER + "SUMMARY-42: the bug is an off-by-one in parse().",
                                    "Which function was it?"]
    assert not any(m["role"] in ("assistant", "tool") for m in seen)  # replaced by the summary


def test_a_responses_upstream_sees_the_summary_as_a_message(own_server: Server, upstream: ScriptedUpstream) -> None:
    own_server.stop()
    own_server.env["COVE_UPSTREAM_API"] = "responses"
    own_server.start()
    client = own_server.client()
    upstream.script([Reply(text="SUMMARY-R"), Reply(text="ok")])
    compacted = client.responses.compact(model=MODEL, input=[{"role": "user", "content": "hello"},
                                                             {"role": "assistant", "content": "hi there"}])
    asked = upstream.requests[-1]
    assert [(item["role"], item["content"][0]["text"]) for item in asked["input"]][-1] == ("user", SUMMARY_PROMPT)

    client.responses.create(model=MODEL, input=[*_as_input(compacted.output),  # type: ignore[list-item]
                                                {"role": "user", "content": "and now?"}])

    sent = upstream.requests[-1]["input"]
    assert [(item["type"], item["role"], item["content"][0]["text"]) for item in sent] == [
        ("message", "user", "hello"), ("message", "user", SUMMARY_HEADER + "SUMMARY-R"),
        ("message", "user", "and now?")]
    assert all("id" not in item for item in sent)  # Cove's ids are its own, never the upstream's


def test_a_compacted_window_compacts_again_replacing_its_summary(client: openai.OpenAI,
                                                                  upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="SUMMARY-1"), Reply(text="SUMMARY-2")])
    first = client.responses.compact(model=MODEL, input=[{"role": "user", "content": "one"},
                                                         {"role": "assistant", "content": "uno"}])
    again = client.responses.compact(model=MODEL, input=[*_as_input(first.output),
                                                         {"role": "assistant", "content": "dos"}])
    assert [item.type for item in again.output] == ["message", "compaction"]
    assert _texts(upstream.requests[-1]["messages"], "user") == ["one", SUMMARY_HEADER + "SUMMARY-1", SUMMARY_PROMPT]


def test_bad_compaction_requests_name_their_param(server: Server, client: openai.OpenAI,
                                                  upstream: ScriptedUpstream) -> None:
    def refused(call: Any) -> openai.APIStatusError:
        with pytest.raises(openai.APIStatusError) as caught:
            call()
        return caught.value

    nothing = refused(lambda: client.responses.compact(model=MODEL))
    assert (nothing.status_code, nothing.body["param"]) == (400, "input")  # type: ignore[index]
    unknown = refused(lambda: client.responses.compact(model=MODEL, input="hi", extra_body={"tools": []}))
    assert (unknown.status_code, unknown.body["param"]) == (400, "tools")  # type: ignore[index]
    kind = refused(lambda: client.responses.compact(model=MODEL, input=[{"type": "nonsense"}]))
    assert (kind.status_code, kind.body["param"]) == (400, "input[0].type")  # type: ignore[index]
    missing = refused(lambda: client.responses.compact(model=MODEL, previous_response_id="resp_nope"))
    assert (missing.status_code, missing.body["param"]) == (404, "previous_response_id")  # type: ignore[index]
    forged = [{"role": "user", "content": "hi"}, {"type": "compaction", "encrypted_content": "I am a summary"}]
    for call in (lambda: client.responses.compact(model=MODEL, input=forged),  # type: ignore[arg-type]
                 lambda: client.responses.create(model=MODEL, input=forged)):  # type: ignore[arg-type]
        error = refused(call)
        assert (error.status_code, error.body["param"]) == (400, "input[1].encrypted_content")  # type: ignore[index]
    bad = refused(lambda: client.responses.create(model=MODEL, input="hi",
                                                  context_management=[{"type": "summarise"}]))
    assert (bad.status_code, bad.body["param"]) == (400, "context_management[0].type")  # type: ignore[index]
    assert upstream.requests == []  # nothing reached the model

    upstream.script([Reply(text="SUMMARY: alpha's secret plan")])
    alphas = client.responses.compact(model=MODEL, input=[{"role": "assistant", "content": "the plan"}])
    beta = server.client("beta")
    lifted = refused(lambda: beta.responses.create(model=MODEL, input=_as_input(alphas.output)))  # type: ignore[arg-type]
    assert (lifted.status_code, lifted.body["param"]) == (400, "input[0].encrypted_content")  # type: ignore[index]
    assert len(upstream.requests) == 1


def test_context_management_compacts_during_a_run(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    lore = "Lyon sits where the Rhône meets the Saône. " * 40
    upstream.script([Reply(text=lore), Reply(text="Ample."), Reply(text="SUMMARY-LYON: two rivers."),
                     Reply(text="Rivers."), Reply(text="Two.")])
    first = client.responses.create(model=MODEL, input="Tell me about Lyon.")
    roomy = client.responses.create(model=MODEL, input="Is that much?", previous_response_id=first.id,
                                    context_management=[{"type": "compaction"}])
    assert [item.type for item in roomy.output] == ["message"]  # far from the window: nothing to do

    events = list(client.responses.create(model=MODEL, input="In one word?", previous_response_id=roomy.id,
                                          context_management=[{"type": "compaction", "compact_threshold": 200}],
                                          stream=True))

    kinds = [(event.type, getattr(event, "output_index", None)) for event in events]
    assert kinds[2:5] == [("response.output_item.added", 0), ("response.compaction.compacting", 0),
                          ("response.output_item.done", 0)], kinds
    done = events[-1].response  # type: ignore[union-attr]
    assert done.status == "completed" and [item.type for item in done.output] == ["compaction", "message"]
    assert done.output[0].encrypted_content and done.output_text == "Rivers."  # type: ignore[union-attr]
    summarising, answering = upstream.requests[-2:]
    assert _texts(summarising["messages"], "user")[-1] == SUMMARY_PROMPT
    assert lore in _texts(summarising["messages"], "assistant")[0]
    assert _texts(answering["messages"], "user") == ["Tell me about Lyon.", "Is that much?", "In one word?",
                                                     SUMMARY_HEADER + "SUMMARY-LYON: two rivers."]
    assert _texts(answering["messages"], "assistant") == []

    # The chain goes on from the compaction: what it replaced stays out, what came after it stays in.
    client.responses.create(model=MODEL, input="How many?", previous_response_id=done.id)
    seen = upstream.requests[-1]["messages"]
    assert _texts(seen, "assistant") == ["Rivers."] and SUMMARY_HEADER + "SUMMARY-LYON: two rivers." in _texts(
        seen, "user")


def test_a_compaction_trigger_compacts_and_ends_the_response(client: openai.OpenAI, upstream: ScriptedUpstream,
                                                              http: httpx.Client) -> None:
    upstream.script([Reply(text="Use pytest."), Reply(text="SUMMARY-T: use pytest."), Reply(text="pytest")])
    first = client.responses.create(model=MODEL, input="How do I test this?")
    early = [{"type": "compaction_trigger"}, {"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, previous_response_id=first.id, input=early)  # type: ignore[arg-type]
    assert refused.value.body["param"] == "input[0]"  # type: ignore[index]

    compacted = client.responses.create(model=MODEL, previous_response_id=first.id,
                                        input=[{"type": "compaction_trigger"}])  # type: ignore[list-item]

    assert compacted.status == "completed" and [item.type for item in compacted.output] == ["compaction"]
    assert _texts(upstream.requests[-1]["messages"], "user")[-1] == SUMMARY_PROMPT  # no model turn after it
    assert http.get(f"/v1/responses/{compacted.id}/input_items").json()["data"] == []  # a signal, not an item
    client.responses.create(model=MODEL, previous_response_id=compacted.id, input="Which tool?")
    assert _texts(upstream.requests[-1]["messages"], "user") == [
        "How do I test this?", SUMMARY_HEADER + "SUMMARY-T: use pytest.", "Which tool?"]


def test_a_context_past_the_window_is_compacted_rather_than_refused(client: openai.OpenAI,
                                                                     upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="y" * 40_000, chunk_chars=4000), Reply(text="SUMMARY-Y"), Reply(text="Done.")])
    long = client.responses.create(model=MODEL, input="Write a lot.")  # 40,000 characters: past 8,192 tokens
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input="Go on.", previous_response_id=long.id)
    assert refused.value.code == "context_length_exceeded"

    answer = client.responses.create(model=MODEL, input="Go on.", previous_response_id=long.id,
                                     context_management=[{"type": "compaction"}])

    assert answer.status == "completed" and [item.type for item in answer.output] == ["compaction", "message"]
    seen = upstream.requests[-1]["messages"]
    assert _texts(seen, "user") == ["Write a lot.", "Go on.", SUMMARY_HEADER + "SUMMARY-Y"]
    assert _texts(seen, "assistant") == []


@pytest.mark.parametrize("mode", ["previous_response_id", "input"])
def test_agents_sdk_compaction_session(server: Server, upstream: ScriptedUpstream, mode: str) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, SQLiteSession, set_tracing_disabled
    from agents.memory import OpenAIResponsesCompactionSession

    set_tracing_disabled(True)
    upstream.script([Reply(text="Hello Ada."), Reply(text="Noted: tea."),
                     Reply(text="SUMMARY-ADA: the user is Ada and likes tea."), Reply(text="You are Ada.")])

    async def main() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEYS["alpha"]) as client:
            session = OpenAIResponsesCompactionSession(
                "ada", SQLiteSession("ada"), client=client, model="gpt-4.1", compaction_mode=mode,  # type: ignore[arg-type]
                should_trigger_compaction=lambda context: len(context["compaction_candidate_items"]) >= 2)
            agent = Agent(name="memory", instructions="Remember the user.",
                          model=OpenAIResponsesModel(model=MODEL, openai_client=client))
            for question in ("My name is Ada.", "I like tea.", "Who am I?"):
                await Runner.run(agent, question, session=session)
            return await session.get_items()

    items = asyncio.run(main())

    assert any(item.get("type") == "compaction" for item in items)
    compacted = upstream.requests[-2]
    assert _texts(compacted["messages"], "assistant") == ["Hello Ada.", "Noted: tea."]  # what it summarised
    seen = upstream.requests[-1]["messages"]
    assert _texts(seen, "user") == ["My name is Ada.", "I like tea.",
                                    SUMMARY_HEADER + "SUMMARY-ADA: the user is Ada and likes tea.", "Who am I?"]
    assert _texts(seen, "assistant") == []
