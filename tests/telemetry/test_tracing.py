"""Traces: a real server exports its spans over OTLP/HTTP to a receiver this test runs on loopback, which
decodes the protobuf; the spans nest request > response > model turn / tool call. Unset, nothing of the
OpenTelemetry SDK is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server, _server_env, data_dir, running_server
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall
from tests.telemetry.otlp_receiver import OtlpReceiver

MODEL = "scripted-model"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


@pytest.fixture
def traced(upstream: ScriptedUpstream, postgres: PostgresServer | None, receiver: OtlpReceiver) -> Iterator[Server]:
    upstream.reset()
    env = {**_server_env(upstream, postgres), "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
           "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "cove-under-test"}
    with running_server(data_dir("cove-traced"), env) as srv:
        yield srv
    upstream.reset()


@pytest.mark.root
def test_a_response_is_traced_request_response_model_and_tool(traced: Server, upstream: ScriptedUpstream,
                                                               receiver: OtlpReceiver) -> None:
    client = traced.client()
    upstream.script([Reply(tool_calls=[ToolCall(name="shell", arguments=json.dumps({"commands": ["echo 42"]}))]),
                     Reply(text="It says 42.")])
    response = client.responses.create(model=MODEL, input="What does it say?",
                                       tools=[{"type": "shell", "environment": {"type": "container_auto"}}])  # type: ignore[list-item]
    assert response.status == "completed"

    def complete() -> bool:
        return (len(receiver.named(f"chat {MODEL}")) == 2 and len(receiver.named("execute_tool shell")) == 1
                and len(receiver.named("POST /v1/responses")) == 1)

    eventually(complete, what="the response's spans to be exported")
    assert set(receiver.paths) == {"/v1/traces"}
    (request,) = receiver.named("POST /v1/responses")
    (run,) = receiver.named("response")
    (tool,) = receiver.named("execute_tool shell")
    turns = receiver.named(f"chat {MODEL}")
    assert request.parent_id == "" and request.attributes["http.route"] == "/v1/responses"
    assert request.service == "cove-under-test"
    assert run.parent_id == request.span_id
    assert all(turn.parent_id == run.span_id for turn in turns)
    assert tool.parent_id == run.span_id
    assert {span.trace_id for span in (request, run, tool, *turns)} == {request.trace_id}
    assert all(turn.attributes["gen_ai.request.model"] == MODEL for turn in turns)
    assert all(isinstance(turn.attributes["gen_ai.usage.input_tokens"], int) for turn in turns)
    assert tool.attributes["gen_ai.tool.type"] == "shell"
    assert tool.attributes["gen_ai.tool.call.id"] == upstream.requests[-1]["messages"][-1]["tool_call_id"]


@pytest.mark.root
def test_query_values_never_reach_the_trace_store(traced: Server, receiver: OtlpReceiver) -> None:
    """A browser's ``?token=`` (display views, terminals) opens a container: its value is not exported."""
    with traced.http() as http:
        assert http.get("/v1/models", params={"token": "sekrit-view-token", "limit": "5"}).status_code == 200
        assert http.get("/metrics").status_code == 200
    (span,) = eventually(lambda: receiver.named("GET /v1/models"), what="the request's span")
    assert span.attributes["url.query"] == "token=REDACTED&limit=REDACTED"
    assert "sekrit" not in repr(receiver.spans)
    assert not [s for s in receiver.spans if s.name in ("GET /healthz", "GET /metrics")]  # polls are not traced


def _loaded(env: dict[str, str], tmp_path: Path) -> list[str]:
    """The OpenTelemetry SDK modules an app built with ``env`` loads."""
    code = ("import sys; from cove.api.app import create_app; from cove.config import Settings; "
            f"create_app(Settings(data_dir={str(tmp_path)!r})); "
            "print(','.join(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter'))))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return [name for name in out.strip().split(",") if name]


def test_nothing_of_the_sdk_is_loaded_without_an_endpoint(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    assert _loaded(env, tmp_path) == []
    traced = _loaded({**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, tmp_path)
    assert "opentelemetry.sdk.trace" in traced and "opentelemetry.exporter.otlp.proto.http.trace_exporter" in traced
