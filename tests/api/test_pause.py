"""Pausing a container freezes its processes (no CPU, memory and files kept); resuming, or using it,
thaws them where they were."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.polling import eventually

pytestmark = pytest.mark.root


def _exec(http: httpx.Client, container_id: str, command: str) -> dict[str, Any]:
    answer = http.post(f"/v1/containers/{container_id}/exec", json={"commands": [command]})
    answer.raise_for_status()
    output: dict[str, Any] = answer.json()["output"][0]
    return output


def _ticks(server: Server, container_id: str) -> int:
    """How far the container's counter got, read on the host from its writable layer: through the API
    a file call would resume the container."""
    ticks = (server.data_dir / "containers" / container_id).resolve() / "disk" / "upper" / "tmp" / "ticks"
    return len(ticks.read_bytes().splitlines()) if ticks.exists() else 0


def test_pause_freezes_and_resume_thaws(server: Server) -> None:
    counter = "(while true; do echo t >> /tmp/ticks; sleep 0.01; done) >/dev/null 2>&1 &"
    with server.http() as http:
        cid = http.post("/v1/containers", json={"name": "paused"}).raise_for_status().json()["id"]
        control = http.post("/v1/containers", json={"name": "control"}).raise_for_status().json()["id"]
        for container_id in (cid, control):
            _exec(http, container_id, counter)
        eventually(lambda: _ticks(server, cid) > 3, what="the counter to run")
        paused = http.post(f"/v1/containers/{cid}/pause").raise_for_status().json()
        assert paused["status"] == "paused"
        assert http.get(f"/v1/containers/{cid}").json()["status"] == "paused"
        frozen_at, control_at = _ticks(server, cid), _ticks(server, control)
        # The same counter in another container moves on while this one stands still.
        eventually(lambda: _ticks(server, control) > control_at + 20, what="the control counter to move on")
        assert _ticks(server, cid) == frozen_at
        resumed = http.post(f"/v1/containers/{cid}/resume").raise_for_status().json()
        assert resumed["status"] == "running"
        eventually(lambda: _ticks(server, cid) > frozen_at + 3, what="the counter to run again")

        http.post(f"/v1/containers/{cid}/pause").raise_for_status()
        out = _exec(http, cid, "echo alive")  # a command on a paused container resumes it
        assert out["stdout"] == "alive\n"
        assert http.get(f"/v1/containers/{cid}").json()["status"] == "running"

        http.post(f"/v1/containers/{cid}/pause").raise_for_status()
        http.delete(f"/v1/containers/{cid}").raise_for_status()  # a paused container can be deleted
        http.delete(f"/v1/containers/{control}").raise_for_status()
        assert http.post(f"/v1/containers/{cid}/resume").status_code == 404


def test_another_projects_container_cannot_be_paused(server: Server) -> None:
    with server.http() as http, server.http("beta") as other:
        cid = http.post("/v1/containers", json={"name": "mine"}).raise_for_status().json()["id"]
        assert other.post(f"/v1/containers/{cid}/pause").status_code == 404
        assert http.get(f"/v1/containers/{cid}").json()["status"] == "running"
        http.delete(f"/v1/containers/{cid}").raise_for_status()
