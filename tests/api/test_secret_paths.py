"""Every way a network policy gets in: no answer and no byte of the database holds a secret's value,
and a sealed value from a client is refused everywhere.

The walk takes every tool type the registry knows, with the policy under ``environment`` and under
``container``, through every way a response is made (plain, background, streamed, in a
conversation) and every way it is read back (retrieve, input items, conversation items, the
container it made), plus ``POST /v1/containers`` and ``/v1/responses/input_tokens``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from cove.store.sealing import SEALED_PREFIX, Sealer, SealingError
from cove.tools.registry import TOOLS
from tests.conftest import Server
from tests.helpers import run, stream_response
from tests.polling import eventually
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

MODEL = "scripted-model"
CALLS = {"apply_patch": ToolCall(name="apply_patch", arguments=json.dumps(
             {"type": "create_file", "path": "/mnt/data/walk.txt", "diff": "+walked\n"})),
         "shell": ToolCall(name="shell", arguments=json.dumps({"commands": ["printenv WALK_TOKEN"]})),
         "code_interpreter": ToolCall(name="code_interpreter",
                                      arguments=json.dumps({"code": "import os; print(os.environ['WALK_TOKEN'])"})),
         "computer": ToolCall(name="computer", arguments=json.dumps({"type": "screenshot"})),
         "computer_use_preview": ToolCall(name="computer", arguments=json.dumps({"type": "screenshot"}))}
"""A call of each tool that accepts a policy, so the response makes its container from it."""


def _policy(value: str) -> dict[str, Any]:
    return {"type": "allowlist", "allowed_domains": ["api.cove.test"],
            "domain_secrets": [{"domain": "api.cove.test", "name": "WALK_TOKEN", "value": value}]}


def _tool(kind: str, place: str, value: str) -> dict[str, Any]:
    tool: dict[str, Any] = {"type": kind}
    if kind == "function":
        tool.update(name="f", parameters={"type": "object", "properties": {}})
    environment = {"type": "container_auto" if place == "environment" else "auto", "network_policy": _policy(value)}
    tool[place] = environment
    return tool


def _variants() -> list[tuple[str, str]]:
    return [(kind, place) for kind in sorted(TOOLS.types) for place in ("environment", "container")]


def _stored_bytes(server: Server) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(server.data_dir.glob("cove.db*")))


def _finished(http: httpx.Client, response_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = http.get(f"/v1/responses/{response_id}").json()
        return body if body["status"] in ("completed", "failed", "incomplete") else None
    return eventually(done, timeout=120, what=f"response {response_id} to finish")


def test_no_answer_and_no_stored_byte_holds_a_secret(own_server: Server, upstream: ScriptedUpstream) -> None:
    if os.environ.get("COVE_TEST_DB", "sqlite") != "sqlite":
        pytest.skip("reads the SQLite files")
    value = f"sk-walk-{secrets.token_hex(16)}"
    answers: list[str] = []
    accepted: list[tuple[str, str]] = []
    with own_server.http() as http:
        made_directly = http.post("/v1/containers", json={"name": "direct", "network_policy": _policy(value)})
        assert made_directly.status_code == 200, made_directly.text
        direct = made_directly.json()["id"]
        answers += [made_directly.text, http.get(f"/v1/containers/{direct}").text,
                    json.dumps(run(http, direct, "printenv WALK_TOKEN")),
                    http.get(f"/v1/containers/{direct}/audit").text]
        for kind, place in _variants():
            # Each its own conversation: a computer tool may not follow another tool's container (no display).
            conversation = http.post("/v1/conversations", json={}).json()["id"]
            tool = _tool(kind, place, value)
            first = http.post("/v1/responses", json={"model": MODEL, "input": "hi", "tools": [tool]})
            answers.append(first.text)
            counted = http.post("/v1/responses/input_tokens", json={"model": MODEL, "input": "hi", "tools": [tool]})
            answers.append(counted.text)
            if first.status_code == 400:
                assert counted.status_code == 400, counted.text
                continue
            assert first.status_code == 200, first.text
            accepted.append((kind, place))
            call = CALLS[kind]
            made: list[str] = []
            for extra in ({}, {"background": True}, {"conversation": conversation}, {"store": False}):
                upstream.script([Reply(tool_calls=[call]), Reply(text="done")])
                created = http.post("/v1/responses", json={"model": MODEL, "input": "use it", "tools": [tool], **extra})
                assert created.status_code == 200, created.text
                answers.append(created.text)
                if extra.get("store") is not False:
                    made.append(created.json()["id"])
                if extra.get("background"):
                    _finished(http, made[-1])  # the scripted turns are one queue: one response at a time
            upstream.script([Reply(tool_calls=[call]), Reply(text="done")])
            events = stream_response(http, {"model": MODEL, "input": "use it", "tools": [tool]})
            answers.append(json.dumps(events))
            made.append(events[-1]["response"]["id"])
            for response_id in made:
                body = _finished(http, response_id)
                assert body["status"] == "completed", body
                answers.append(json.dumps(body))
                answers.append(http.get(f"/v1/responses/{response_id}/input_items").text)
                container_id = body["container_id"]
                answers.append(http.get(f"/v1/containers/{container_id}").text)
                shown = run(http, container_id, "printenv WALK_TOKEN")[0]["stdout"]
                assert str(shown).startswith("cove_secret_")  # the container got the secret's placeholder
                answers.append(http.get(f"/v1/containers/{container_id}/audit").text)
            answers.append(http.get(f"/v1/conversations/{conversation}/items", params={"limit": 100}).text)
        answers.append(http.get("/v1/containers", params={"limit": 100}).text)
    assert accepted == [("apply_patch", "container"), ("code_interpreter", "container"), ("computer", "container"),
                        ("shell", "environment")]
    for answer in answers:
        assert value not in answer
    stored = _stored_bytes(own_server)
    assert b"cove-sealed:" in stored  # what the walk wrote is there, sealed
    assert value.encode() not in stored
    assert value not in own_server.log.read_text()


def test_a_sealed_value_from_a_client_is_refused_everywhere(own_server: Server, upstream: ScriptedUpstream) -> None:
    if os.environ.get("COVE_TEST_DB", "sqlite") != "sqlite":
        pytest.skip("reads the SQLite files")
    value = f"sk-lift-{secrets.token_hex(16)}"
    with own_server.http() as http:
        made = http.post("/v1/containers", json={"name": "victim", "network_policy": _policy(value)})
        assert made.status_code == 200, made.text
        upstream.script([Reply(text="queued")])
        queued = http.post("/v1/responses", json={"model": MODEL, "input": "x", "background": True,
                                                  "tools": [_tool("shell", "environment", value)]})
        _finished(http, queued.json()["id"])
    lifted = sorted(set(re.findall(rb"cove-sealed:[A-Za-z0-9_=-]+", _stored_bytes(own_server))))
    assert len(lifted) >= 2  # the container's and the response's
    with own_server.http("beta") as http:  # another tenant with a copy of the database
        for token in (raw.decode() for raw in lifted):
            refused = [
                (http.post("/v1/containers", json={"name": "thief", "network_policy": _policy(token)}),
                 "network_policy.domain_secrets[0].value"),
                (http.post("/v1/responses", json={"model": MODEL, "input": "x",
                                                  "tools": [_tool("shell", "environment", token)]}),
                 "tools[0].environment.network_policy.domain_secrets[0].value"),
                (http.post("/v1/responses", json={"model": MODEL, "input": "x", "background": True,
                                                  "tools": [_tool("code_interpreter", "container", token)]}),
                 "tools[0].container.network_policy.domain_secrets[0].value"),
                (http.post("/v1/responses/input_tokens", json={"model": MODEL, "input": "x",
                                                               "tools": [_tool("shell", "environment", token)]}),
                 "tools[0].environment.network_policy.domain_secrets[0].value"),
            ]
            for answer, param in refused:
                assert answer.status_code == 400, answer.text
                assert answer.json()["error"]["param"] == param
                assert value not in answer.text
        assert http.get("/v1/containers").json()["data"] == []  # nothing was made


def test_each_sealed_value_opens_only_for_what_it_was_sealed_for(tmp_path: Path) -> None:
    sealer = Sealer(tmp_path / "key")
    sealed = sealer.seal("s3cret", "container:cntr_a")
    assert sealer.open(sealed, "container:cntr_a") == "s3cret"
    for other in ("container:cntr_b", "response:cntr_a", ""):
        with pytest.raises(SealingError, match="sealed for something else"):
            sealer.open(sealed, other)
    with pytest.raises(SealingError, match="cannot be opened with this server's key"):
        Sealer(tmp_path / "other-key").open(sealed, "container:cntr_a")


def test_values_sealed_before_purposes_still_open(tmp_path: Path) -> None:
    """Rows written by an older server (a container's secrets, a queued request) keep working: such
    a value can only come from the server's own rows, since every input refuses sealed values."""
    sealer = Sealer(tmp_path / "key")
    old = Fernet((tmp_path / "key").read_bytes().strip())
    secrets_list = '[{"domain": "api.cove.test", "name": "K", "value": "v", "placeholder": "p"}]'
    for plain in ("plain-value", secrets_list):
        assert sealer.open(SEALED_PREFIX + old.encrypt(plain.encode()).decode(), "container:cntr_x") == plain
