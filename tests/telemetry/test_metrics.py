"""``GET /metrics`` of a real server: what it counts after real containers, commands, egress, a response
with a hosted tool and webhook deliveries; who may read it; what its labels never hold."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from cove.api.metrics import admit
from cove.config import Settings
from cove.errors import PermissionDenied
from cove.telemetry import metrics
from tests.conftest import KEYS, Server, _server_env, data_dir, running_server
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.responses.test_webhooks import HOOKS_HOST, Receiver
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall
from tests.telemetry.scrape import scrape, value

MODEL = "scripted-model"
SHELL = {"type": "shell", "environment": {"type": "container_auto"}}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(statuses=[500])  # the first attempt fails: one retry, then delivered
    yield r
    r.close()


@pytest.fixture
def metered(upstream: ScriptedUpstream, postgres: PostgresServer | None, receiver: Receiver,
            tmp_path: Path) -> Iterator[Server]:
    """A server of its own (its counters start at zero) whose projects may send webhooks to ``receiver``."""
    upstream.reset()
    projects = tmp_path / "projects.toml"
    projects.write_text(f'[defaults]\nwebhook_urls = ["http://{HOOKS_HOST}:{receiver.port}/"]\n')
    env = {**_server_env(upstream, postgres), "COVE_PROJECTS_FILE": str(projects),
           "COVE_EGRESS_TEST_HOSTS": f"{HOOKS_HOST}=127.0.0.1", "COVE_WEBHOOK_RETRIES": "0.2s,0.2s"}
    with running_server(data_dir("cove-metrics"), env) as srv:
        yield srv
    upstream.reset()


@pytest.mark.root
def test_a_scrape_counts_what_the_server_did(metered: Server, upstream: ScriptedUpstream,
                                             receiver: Receiver) -> None:
    client = metered.client()
    policy = {"type": "allowlist", "allowed_domains": ["allowed.test"]}
    container = client.containers.create(name="metered", network_policy=policy)  # type: ignore[arg-type]
    with metered.http() as http:
        def run(command: str, timeout_ms: int = 30_000) -> dict[str, object]:
            answer = http.post(f"/v1/containers/{container.id}/exec",
                               json={"commands": [command], "timeout_ms": timeout_ms})
            answer.raise_for_status()
            result: dict[str, object] = answer.json()["output"][0]
            return result

        assert run("echo hi")["stdout"] == "hi\n"
        assert run("curl -sS -m 10 -o /dev/null -w '%{http_code}' http://blocked.test/")["stdout"] == "403"
        assert run("sleep 5", timeout_ms=300)["outcome"] == {"type": "timeout"}
    client.webhooks.create(name="hooks", url=f"http://{HOOKS_HOST}:{receiver.port}/hook",
                           event_types=["response.completed"])
    upstream.script([Reply(tool_calls=[ToolCall(name="shell", arguments=json.dumps({"commands": ["echo 42"]}))]),
                     Reply(text="It says 42.")])
    response = client.responses.create(model=MODEL, input="What does it say?", tools=[SHELL],  # type: ignore[list-item]
                                       background=True)
    eventually(lambda: client.responses.retrieve(response.id).status == "completed", what="the response")
    eventually(lambda: len(receiver.received) == 2, what="the webhook's retry to be delivered")

    def delivered() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        samples = scrape(metered.url)
        return samples if value(samples, "cove_webhook_deliveries_total", result="delivered") == 1 else {}

    samples = eventually(delivered, what="the delivery to be counted")
    assert value(samples, "cove_webhook_deliveries_total", result="retry") == 1
    assert value(samples, "cove_webhook_deliveries_pending") == 0
    assert value(samples, "cove_containers", status="running") == 2  # the one made here and the response's
    assert value(samples, "cove_containers", status="stopped") == 0
    assert value(samples, "cove_container_create_seconds_count") == 2
    assert value(samples, "cove_exec_seconds_count", outcome="exit") == 3  # two here, one the tool ran
    assert value(samples, "cove_exec_seconds_count", outcome="timeout") == 1
    assert value(samples, "cove_exec_seconds_bucket", outcome="timeout", le="0.25") == 0  # it took its 300 ms
    assert value(samples, "cove_egress_decisions_total", decision="denied") >= 1
    assert value(samples, "cove_tool_calls_total", type="shell", outcome="completed") == 1
    assert value(samples, "cove_tool_call_seconds_count", type="shell") == 1
    assert value(samples, "cove_responses_total", status="completed", model=MODEL) == 1
    assert value(samples, "cove_upstream_seconds_count", model=MODEL, outcome="ok") == 2
    assert value(samples, "cove_upstream_tokens_total", model=MODEL, kind="input") > 0
    assert value(samples, "cove_upstream_tokens_total", model=MODEL, kind="output") > 0
    assert value(samples, "cove_background_responses", status="queued") == 0
    assert value(samples, "cove_background_responses", status="in_progress") == 0
    assert value(samples, "process_cpu_seconds_total") > 0
    text = httpx.get(f"{metered.url}/metrics").text
    for secret in ("alpha", container.id, response.id, "blocked.test", "hooks.test", KEYS["alpha"]):
        assert secret not in text, secret  # no project, object, host or key ever becomes a label


@pytest.mark.root
def test_metrics_are_the_operators_alone(upstream: ScriptedUpstream, postgres: PostgresServer | None) -> None:
    env = {**_server_env(upstream, postgres), "COVE_METRICS_TOKEN": "scrape-me"}
    with running_server(data_dir("cove-metrics-token"), env) as srv:
        def status(headers: dict[str, str]) -> int:
            return httpx.get(f"{srv.url}/metrics", headers=headers).status_code

        assert status({}) == 401
        assert status({"Authorization": f"Bearer {KEYS['alpha']}"}) == 401  # a tenant's key is not the token
        assert status({"Authorization": "Bearer scrape-me!"}) == 401
        answer = httpx.get(f"{srv.url}/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert answer.status_code == 200 and "cove_exec_seconds" in answer.text
        assert httpx.get(f"{srv.url}/metrics").json()["error"]["code"] == "invalid_metrics_token"
    with running_server(data_dir("cove-metrics-local"), _server_env(upstream, postgres)) as srv:
        assert httpx.get(f"{srv.url}/metrics").status_code == 200  # no token: this machine's scraper
        forwarded = httpx.get(f"{srv.url}/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert forwarded.status_code == 403 and forwarded.json()["error"]["code"] == "metrics_loopback_only"


def test_without_a_token_only_loopback_peers_are_served() -> None:
    def request(peer: str) -> Request:
        return Request({"type": "http", "method": "GET", "path": "/metrics", "headers": [], "client": (peer, 40000)})

    settings = Settings(metrics_token=None)
    admit(request("127.0.0.1"), settings)
    admit(request("::1"), settings)
    for peer in ("10.0.0.5", "203.0.113.9", "::ffff:10.0.0.5"):
        with pytest.raises(PermissionDenied):
            admit(request(peer), settings)


def test_model_labels_are_bounded() -> None:
    """Only names an upstream served become labels, and at most ``MAX_MODEL_LABELS`` of them."""
    assert metrics.model_label("never-served-anywhere") == "other"
    names = [f"made-up-{index}" for index in range(metrics.MAX_MODEL_LABELS + 5)]
    labels = {metrics.admit_model(name) for name in names}
    assert len(labels - {"other"}) <= metrics.MAX_MODEL_LABELS and "other" in labels
    assert metrics.model_label(None) == "other"


@pytest.mark.root
def test_the_queue_depth_a_failing_upstream_and_a_cancel(upstream: ScriptedUpstream,
                                                          postgres: PostgresServer | None) -> None:
    upstream.reset()
    env = {**_server_env(upstream, postgres), "COVE_BACKGROUND_WORKERS": "1"}
    with running_server(data_dir("cove-metrics-queue"), env) as srv:
        client = srv.client()
        # The scenario is a slow upstream: the first response holds the only worker for 3 s.
        upstream.script([Reply(text="slow", delay=3), Reply(error=(400, "the upstream refused it")),
                         Reply(text="fine")])
        made = [client.responses.create(model=MODEL, input=f"question {n}", background=True) for n in range(3)]

        def queued() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            samples = scrape(srv.url)
            waiting = value(samples, "cove_background_responses", status="queued")
            running = value(samples, "cove_background_responses", status="in_progress")
            return samples if (waiting, running) == (2, 1) else {}

        eventually(queued, what="two responses queued behind the running one")
        statuses = eventually(lambda: (s := [client.responses.retrieve(r.id).status for r in made])
                              and all(x not in ("queued", "in_progress") for x in s) and s, what="all three")
        assert sorted(statuses) == ["completed", "completed", "failed"]
        samples = scrape(srv.url)
        assert value(samples, "cove_background_responses", status="queued") == 0
        assert value(samples, "cove_upstream_seconds_count", model=MODEL, outcome="error") == 1
        assert value(samples, "cove_upstream_seconds_count", model=MODEL, outcome="ok") == 2
        assert value(samples, "cove_responses_total", status="completed", model=MODEL) == 2
        assert value(samples, "cove_responses_total", status="failed", model=MODEL) == 1
        upstream.script([Reply(text="never", delay=30)])  # cancelled while the upstream is still thinking
        waiting = client.responses.create(model=MODEL, input="slow", background=True)
        eventually(lambda: upstream.requests and upstream.requests[-1]["messages"][-1]["content"] == "slow",
                   what="the model turn to start")
        client.responses.cancel(waiting.id)
        eventually(lambda: client.responses.retrieve(waiting.id).status == "cancelled", what="the cancel")
        samples = scrape(srv.url)
        assert value(samples, "cove_upstream_seconds_count", model=MODEL, outcome="cancelled") == 1
        assert value(samples, "cove_upstream_seconds_count", model=MODEL, outcome="error") == 1  # not one more
        assert value(samples, "cove_responses_total", status="cancelled", model=MODEL) == 1
    upstream.reset()
