"""``after`` naming another project's object answers exactly as an unknown id: lists never confirm
that an id exists elsewhere, nor page through from its position."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.scripted_upstream import ScriptedUpstream

pytestmark = pytest.mark.root


def _same_as_unknown(http: httpx.Client, path: str, foreign: str, unknown: str) -> None:
    answers = [http.get(path, params={"after": after}) for after in (foreign, unknown)]
    assert [a.status_code for a in answers] == [400, 400], [a.text for a in answers]
    bodies: list[dict[str, Any]] = [a.json() for a in answers]
    assert bodies[0]["error"]["message"].replace(foreign, "ID") == bodies[1]["error"]["message"].replace(unknown, "ID")
    assert {**bodies[0]["error"], "message": ""} == {**bodies[1]["error"], "message": ""}


def test_another_projects_cursor_is_an_unknown_id(server: Server, upstream: ScriptedUpstream) -> None:
    with server.http("beta") as beta:
        container = beta.post("/v1/containers", json={"name": "theirs"}).json()["id"]
        file_id = beta.post(f"/v1/containers/{container}/files",
                            files={"file": ("t.txt", b"theirs")}).json()["id"]
        conversation = beta.post("/v1/conversations", json={"items": [
            {"type": "message", "role": "user", "content": "theirs"}]}).json()["id"]
        conversation_item = beta.get(f"/v1/conversations/{conversation}/items").json()["data"][0]["id"]
        upstream.script([])
        response = beta.post("/v1/responses", json={"model": "scripted-model", "input": "theirs"}).json()["id"]
        input_item = beta.get(f"/v1/responses/{response}/input_items").json()["data"][0]["id"]
    with server.http("alpha") as alpha:
        own_container = alpha.post("/v1/containers", json={"name": "mine"}).json()["id"]
        own_conversation = alpha.post("/v1/conversations", json={"items": [
            {"type": "message", "role": "user", "content": "mine"}]}).json()["id"]
        own_response = alpha.post("/v1/responses", json={"model": "scripted-model", "input": "mine"}).json()["id"]
        _same_as_unknown(alpha, "/v1/containers", container, "cntr_" + "0" * (len(container) - 5))
        _same_as_unknown(alpha, f"/v1/containers/{own_container}/files", file_id, "cfile_unknown")
        _same_as_unknown(alpha, f"/v1/conversations/{own_conversation}/items", conversation_item, "msg_unknown")
        _same_as_unknown(alpha, f"/v1/responses/{own_response}/input_items", input_item, "msg_unknown")
