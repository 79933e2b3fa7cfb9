"""Webhooks: endpoints through the SDK's ``client.webhooks``, signed deliveries that its ``unwrap()``
verifies, retries, restarts, and projects kept apart."""

from __future__ import annotations

import http.server
import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest

from tests.conftest import Server, _server_env, data_dir, running_server
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.scripted_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.root

MODEL = "scripted-model"
HOOKS_HOST = "hooks.test"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers from ``statuses`` (then 200)."""

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{HOOKS_HOST}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _hook_env(upstream: ScriptedUpstream, postgres: PostgresServer | None, projects: Path) -> dict[str, str]:
    return {**_server_env(upstream, postgres), "COVE_PROJECTS_FILE": str(projects),
            "COVE_EGRESS_TEST_HOSTS": f"{HOOKS_HOST}=127.0.0.1", "COVE_WEBHOOK_RETRIES": "0.2s,0.2s,0.2s"}


@pytest.fixture
def hook_server(receiver: Receiver, upstream: ScriptedUpstream, postgres: PostgresServer | None,
                tmp_path: Path) -> Iterator[Server]:
    """A server whose projects may point webhooks at the receiver (by name, mapped to loopback)."""
    projects = tmp_path / "projects.toml"
    projects.write_text(f'[defaults]\nwebhook_urls = ["http://{HOOKS_HOST}:{receiver.port}/"]\n')
    with running_server(data_dir("cove-hooks"), _hook_env(upstream, postgres, projects)) as srv:
        yield srv


def _finished(client: openai.OpenAI, response_id: str) -> str:
    return str(eventually(lambda: (s := client.responses.retrieve(response_id).status) not in ("queued", "in_progress")
                          and s, what=f"{response_id} to finish"))


def _deliveries(server: Server, response_id: str, project: str = "alpha") -> list[dict[str, object]]:
    with server.http(project) as http:
        answer = http.get(f"/v1/responses/{response_id}/webhook_deliveries")
        answer.raise_for_status()
        data: list[dict[str, object]] = answer.json()["data"]
        return data


def test_endpoints_through_the_sdk(hook_server: Server, receiver: Receiver) -> None:
    client, other = hook_server.client("alpha"), hook_server.client("beta")
    made = client.webhooks.create(name="mine", url=receiver.url("/a"), event_types=["response.completed"])
    assert made.signing_secret.startswith("whsec_") and made.object == "webhook_endpoint"
    assert made.signing_secret_hint and made.signing_secret_hint.endswith(made.signing_secret[-4:])
    shown = client.webhooks.retrieve(made.id)
    assert shown.url == receiver.url("/a") and shown.event_types == ["response.completed"]
    assert "signing_secret" not in shown.model_dump()
    assert [e.id for e in client.webhooks.list()] == [made.id]
    updated = client.webhooks.update(made.id, event_types=["response.completed", "response.failed"], name="renamed")
    assert updated.name == "renamed" and updated.event_types == ["response.completed", "response.failed"]
    rotated = client.webhooks.rotate_secret(made.id)
    assert rotated.signing_secret != made.signing_secret
    assert client.webhooks.event_types.list().data == ["response.completed", "response.failed",
                                                       "response.cancelled", "response.incomplete"]
    with pytest.raises(openai.NotFoundError):
        other.webhooks.retrieve(made.id)  # another project's endpoint does not exist for it
    assert list(other.webhooks.list()) == []
    tested = client.webhooks.test(made.id, event_type="response.completed")
    assert tested.status_code == 200 and tested.success
    assert json.loads(receiver.received[-1].body)["type"] == "response.completed"
    for url, code in ((f"http://elsewhere.test:{receiver.port}/", "url_not_allowed"),
                      ("https://example.com/hooks", "url_not_allowed"), ("ftp://hooks.test/x", "invalid_url"),
                      ("http://127.0.0.1/x", "invalid_url")):
        with pytest.raises(openai.BadRequestError) as refused:
            client.webhooks.create(name="x", url=url, event_types=["response.completed"])
        assert refused.value.code == code, url
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.webhooks.create(name="x", url=receiver.url("/a"), event_types=["batch.completed"])
    assert unsupported.value.code == "unsupported_event_type"
    assert client.webhooks.delete(made.id).deleted
    assert list(client.webhooks.list()) == []


def test_a_background_response_sends_a_signed_event(hook_server: Server, receiver: Receiver,
                                                    upstream: ScriptedUpstream) -> None:
    client = hook_server.client()
    made = client.webhooks.create(name="done", url=receiver.url("/done"), event_types=["response.completed"])
    upstream.script([Reply(text="plain"), Reply(text="in the background")])
    client.responses.create(model=MODEL, input="foreground")  # foreground responses send nothing
    response = client.responses.create(model=MODEL, input="work", background=True)
    assert _finished(client, response.id) == "completed"
    eventually(lambda: receiver.received, what="the webhook")
    delivery = receiver.received[0]
    event = client.webhooks.unwrap(delivery.body, delivery.headers, secret=made.signing_secret)
    assert event.type == "response.completed" and event.data.id == response.id and event.object == "event"
    assert delivery.headers["webhook-id"] == event.id
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(delivery.body + b" ", delivery.headers, secret=made.signing_secret)
    shown = eventually(lambda: (d := _deliveries(hook_server, response.id)) and d[0]["status"] == "delivered" and d,
                       what="the delivery recorded")
    assert shown[0]["attempts"] == 1 and shown[0]["last_status_code"] == 200
    assert len(receiver.received) == 1


def test_failed_cancelled_and_incomplete(hook_server: Server, receiver: Receiver, upstream: ScriptedUpstream) -> None:
    client = hook_server.client()
    made = client.webhooks.create(name="all", url=receiver.url("/all"), event_types=[
        "response.failed", "response.cancelled", "response.incomplete"])
    upstream.script([Reply(error=(400, "the model refused the request")),
                     Reply(text="cut " * 50, finish_reason="length"),
                     Reply(text="slow " * 200, chunk_delay=0.05)])
    failed = client.responses.create(model=MODEL, input="a", background=True)
    assert _finished(client, failed.id) == "failed"
    incomplete = client.responses.create(model=MODEL, input="b", background=True)
    assert _finished(client, incomplete.id) == "incomplete"
    slow = client.responses.create(model=MODEL, input="c", background=True)
    eventually(lambda: client.responses.retrieve(slow.id).status == "in_progress", what="the slow one to start")
    client.responses.cancel(slow.id)
    eventually(lambda: len(receiver.received) == 3, what="three webhooks")
    events = {(e := client.webhooks.unwrap(r.body, r.headers, secret=made.signing_secret)).data.id: e.type
              for r in receiver.received}
    assert events == {failed.id: "response.failed", incomplete.id: "response.incomplete",
                      slow.id: "response.cancelled"}


def test_retries_then_survives_a_crash(hook_server: Server, receiver: Receiver, upstream: ScriptedUpstream) -> None:
    client = hook_server.client()
    made = client.webhooks.create(name="flaky", url=receiver.url("/flaky"), event_types=["response.completed"])
    receiver.statuses = [500, 503]
    upstream.script([Reply(text="one")])
    first = client.responses.create(model=MODEL, input="x", background=True)
    shown = eventually(lambda: (d := _deliveries(hook_server, first.id)) and d[0]["status"] == "delivered" and d,
                       what="delivered on the third attempt")
    assert shown[0]["attempts"] == 3 and len(receiver.received) == 3
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # one event, three attempts
    for r in receiver.received:
        client.webhooks.unwrap(r.body, r.headers, secret=made.signing_secret)

    receiver.received.clear()
    receiver.statuses = [500] * 1000  # refuses until the server is gone
    upstream.script([Reply(text="two")])
    second = client.responses.create(model=MODEL, input="y", background=True)
    # The failed first attempt recorded (the kill comes after it, not between the request and its record).
    eventually(lambda: (d := _deliveries(hook_server, second.id)) and d[0]["attempts"] >= 1, what="a first attempt")
    hook_server.stop(signal.SIGKILL)
    receiver.statuses = []
    hook_server.start()
    client = hook_server.client()
    shown = eventually(lambda: (d := _deliveries(hook_server, second.id)) and d[0]["status"] == "delivered" and d,
                       what="delivered after the restart", timeout=30)
    assert shown[0]["attempts"] >= 2 and receiver.received[-1].headers["webhook-id"] == shown[0]["event_id"]


def test_projects_get_only_their_own_events(hook_server: Server, receiver: Receiver,
                                            upstream: ScriptedUpstream) -> None:
    alpha, beta = hook_server.client("alpha"), hook_server.client("beta")
    mine = alpha.webhooks.create(name="a", url=receiver.url("/alpha"), event_types=["response.completed"])
    beta.webhooks.create(name="b", url=receiver.url("/beta"), event_types=["response.completed"])
    upstream.script([Reply(text="alpha's")])
    response = alpha.responses.create(model=MODEL, input="x", background=True)
    eventually(lambda: receiver.received, what="alpha's webhook")
    shown = eventually(lambda: (d := _deliveries(hook_server, response.id)) and d[0]["status"] == "delivered" and d,
                       what="alpha's delivery recorded")
    assert [d["webhook_endpoint_id"] for d in shown] == [mine.id]
    assert len(receiver.received) == 1
    with hook_server.http("beta") as http:
        assert http.get(f"/v1/responses/{response.id}/webhook_deliveries").status_code == 404


def _operator_file(path: Path, receiver: Receiver, secret: str) -> None:
    path.write_text(f"""[[projects.beta.webhooks]]
name = "ops"
url = "{receiver.url('/ops')}"
secret = "{secret}"
event_types = ["response.completed"]
""")


def test_endpoints_of_the_projects_file(receiver: Receiver, upstream: ScriptedUpstream,
                                        postgres: PostgresServer | None, tmp_path: Path) -> None:
    first, second = "whsec_" + "A" * 43 + "=", "whsec_" + "B" * 43 + "="
    projects = tmp_path / "projects.toml"
    _operator_file(projects, receiver, first)  # an http URL, though beta's webhook_urls is the default "*"
    with running_server(data_dir("cove-hooks-ops"), _hook_env(upstream, postgres, projects)) as srv:
        client = srv.client("beta")
        [shown] = list(client.webhooks.list())
        assert shown.name == "ops" and shown.url == receiver.url("/ops")
        assert list(srv.client("alpha").webhooks.list()) == []
        for change in (lambda: client.webhooks.update(shown.id, name="mine now"),
                       lambda: client.webhooks.rotate_secret(shown.id), lambda: client.webhooks.delete(shown.id)):
            with pytest.raises(openai.BadRequestError) as refused:
                change()
            assert refused.value.code == "endpoint_managed"
        upstream.script([Reply(text="one"), Reply(text="two")])
        response = client.responses.create(model=MODEL, input="x", background=True)
        eventually(lambda: receiver.received, what="the operator's endpoint to get the event")
        event = client.webhooks.unwrap(receiver.received[0].body, receiver.received[0].headers, secret=first)
        assert event.data.id == response.id

        srv.stop()
        _operator_file(projects, receiver, second)  # the operator rotates the secret in the file
        srv.start()
        client = srv.client("beta")
        assert [e.id for e in client.webhooks.list()] == [shown.id]
        again = client.responses.create(model=MODEL, input="y", background=True)
        eventually(lambda: len(receiver.received) == 2, what="the second event")
        event = client.webhooks.unwrap(receiver.received[1].body, receiver.received[1].headers, secret=second)
        assert event.data.id == again.id

        srv.stop()
        projects.write_text("")  # and removes the endpoint
        srv.start()
        assert list(srv.client("beta").webhooks.list()) == []
