"""Background responses: queued in the store, cancellable, resumable, and durable across restarts."""

from __future__ import annotations

import json
import signal

import openai
import pytest

from tests.conftest import Server
from tests.polling import eventually
from tests.scripted_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.root

MODEL = "scripted-model"


def _wait(client: openai.OpenAI, response_id: str, *statuses: str, timeout: float = 30) -> str:
    status = eventually(lambda: (current := client.responses.retrieve(response_id).status) in statuses and current,
                        timeout=timeout, what=f"{response_id} to be {' or '.join(statuses)}")
    return str(status)


def test_background_stream_through_the_sdk_helper(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="background, streamed")])
    with client.responses.stream(model=MODEL, input="hi", background=True) as stream:
        final = stream.get_final_response()
    assert final.output_text == "background, streamed" and final.background


def test_background_completes_and_polls(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="done in the background", delay=0.5)])
    response = client.responses.create(model=MODEL, input="work", background=True)
    assert response.status == "queued" and response.background
    assert _wait(client, response.id, "completed") == "completed"
    assert client.responses.retrieve(response.id).output_text == "done in the background"


def test_cancel(client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="never finished " * 100, chunk_delay=0.05)])
    response = client.responses.create(model=MODEL, input="work", background=True)
    _wait(client, response.id, "in_progress")
    cancelled = client.responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(response.id).status == "cancelled"
    plain = client.responses.create(model=MODEL, input="not background")
    try:
        client.responses.cancel(plain.id)
        raise AssertionError("cancelling a foreground response must fail")
    except openai.BadRequestError as exc:
        assert exc.body["param"] == "response_id"  # type: ignore[index]


def test_stream_resumes_by_sequence_number(client: openai.OpenAI, server: Server, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(text="resumable words " * 10, chunk_delay=0.02)])
    first = []
    with server.http() as http, http.stream("POST", "/v1/responses", json={
            "model": MODEL, "input": "hi", "stream": True, "background": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                first.append(json.loads(line[6:]))
                if len(first) == 7:
                    break
    assert [e["type"] for e in first[:2]] == ["response.created", "response.queued"]
    assert first[0]["response"]["status"] == "queued"
    response_id = first[0]["response"]["id"]
    cut = first[-1]["sequence_number"]
    rest = []
    with server.http() as http, http.stream(
            "GET", f"/v1/responses/{response_id}", params={"stream": "true", "starting_after": cut}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                rest.append(json.loads(line[6:]))
    assert rest[0]["sequence_number"] == cut + 1
    assert [e["sequence_number"] for e in rest] == list(range(cut + 1, cut + 1 + len(rest)))
    assert rest[-1]["type"] == "response.completed"
    text = "".join(e["delta"] for e in first + rest if e["type"] == "response.output_text.delta")
    assert text == "resumable words " * 10
    # And the whole stream again, from the store, after it finished.
    replay = []
    with server.http() as http, http.stream("GET", f"/v1/responses/{response_id}", params={"stream": "true"}) as r:
        replay = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert [e["sequence_number"] for e in replay] == list(range(len(replay)))


def test_restart_never_loses_or_strands_a_background_response(own_server: Server, upstream: ScriptedUpstream) -> None:
    """A running one goes on after a restart (its model turn cut off is kept, closed, and run again), up
    to ``COVE_MAX_RESUMES`` times, then fails saying so; a queued one waits its turn and runs."""
    own_server.stop()
    own_server.env.update(COVE_BACKGROUND_WORKERS="1", COVE_MAX_RESUMES="1")
    own_server.start()
    client = own_server.client()
    upstream.script([Reply(text="slow " * 200, chunk_delay=0.05), Reply(text="second one")])
    running = client.responses.create(model=MODEL, input="first", background=True)
    waiting = client.responses.create(model=MODEL, input="second", background=True)
    _wait(client, running.id, "in_progress")
    eventually(lambda: upstream.requests, what="the first response's model call")  # it took the slow turn
    # A second of its text streamed: its stored events (written every 0.2 s) hold some of it.
    eventually(lambda: len(client.responses.retrieve(running.id).output_text) > 80, what="its text streaming")
    assert client.responses.retrieve(waiting.id).status == "queued"
    own_server.stop(signal.SIGKILL)
    upstream.reset()
    upstream.script([Reply(text="slower " * 200, chunk_delay=0.05)])
    own_server.start()
    client = own_server.client()
    eventually(lambda: upstream.requests, what="the resumed response's model call")

    def second_turn_streamed() -> bool:  # for a second, as above
        output = client.responses.retrieve(running.id).output
        return len(output) == 2 and output[1].type == "message" and len(output[1].content[0].text) > 80

    eventually(second_turn_streamed, what="the resumed response's text streaming")
    resumed = client.responses.retrieve(running.id)
    assert resumed.status == "in_progress"
    cut = resumed.output[0]
    assert cut.type == "message" and cut.status == "incomplete", cut
    assert cut.content[0].type == "output_text" and cut.content[0].text.startswith("slow slow")
    assert client.responses.retrieve(waiting.id).status == "queued"
    own_server.stop(signal.SIGKILL)
    upstream.reset()
    upstream.script([Reply(text="second one")])
    own_server.start()
    client = own_server.client()
    failed = client.responses.retrieve(running.id)
    assert failed.status == "failed" and failed.error is not None, failed
    assert "restarted" in failed.error.message and "COVE_MAX_RESUMES" in failed.error.message
    assert [item.status for item in failed.output] == ["incomplete", "incomplete"]  # both cut-off turns kept
    assert _wait(client, waiting.id, "completed") == "completed"
    assert client.responses.retrieve(waiting.id).output_text == "second one"
