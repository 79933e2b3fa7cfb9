"""Two API replicas on one PostgreSQL and one Ray cluster (``docs/fleet.md``, ``docs/replicas.md``): a
container made through replica ``a`` is on a fleet node, so replica ``b`` runs and streams its commands
too (without the fleet only its holder could); and a response on ``b`` whose container's node is killed
in the middle of a command fails with the fleet's error, in bounded time, seen alike from ``a``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.ray_cluster import (
    CALL_TIMEOUT,
    SIMULATED_NODES,
    RayCluster,
    create_container,
    fleet_env,
    fleet_status,
    hosts_reported,
    node_of,
    run,
    sockets_of,
    streamed,
)
from tests.responses import test_replicas
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

database = test_replicas.database
"""The session's PostgreSQL (``COVE_TEST_DB=postgres``), else one of the module's own."""


@pytest.fixture(scope="module")
def replicas(cluster: RayCluster, database: PostgresServer,
             upstream: ScriptedUpstream) -> Iterator[tuple[Server, Server]]:
    """Replicas ``a`` and ``b``, both Ray drivers of ``cluster``, once each places containers."""
    with test_replicas.two_replicas(database, upstream, **fleet_env(cluster)) as (a, b):
        hosts_reported(a, cluster, set(SIMULATED_NODES))
        for srv in (a, b):  # each replica's own check must have seen the nodes before it places on them
            with srv.http() as http:
                eventually(lambda http=http: http.post("/v1/containers", json={"name": "probe"}).status_code == 200,
                           timeout=30, what="the replica to place a container")
        yield a, b


def test_a_container_made_on_one_replica_runs_and_streams_through_the_other(
        replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    with a.http() as on_a, b.http() as on_b:
        cid = create_container(on_a)
        assert on_b.get(f"/v1/containers/{cid}").json()["status"] == "running"
        assert node_of(on_b, cid) == node_of(on_a, cid) in SIMULATED_NODES
        answer = run(on_b, cid, "echo from b")
        assert answer.status_code == 200, answer.text
        assert answer.json()["output"][0]["stdout"] == "from b\n"
        assert streamed(on_b, cid, "echo streamed from b") == "streamed from b\n"
        assert on_b.delete(f"/v1/containers/{cid}").status_code == 200
        assert on_a.get(f"/v1/containers/{cid}").status_code == 404
        assert {node: row["containers"] for node, row in fleet_status(a).items()} == {"n2": 1, "n3": 1}  # the probes


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: {"):
            yield json.loads(line[len("data: "):])


def test_a_response_whose_node_dies_mid_command_fails_clearly_and_in_time(
        replicas: tuple[Server, Server], cluster: RayCluster, upstream: ScriptedUpstream) -> None:
    a, b = replicas
    upstream.reset()
    sleep = {"commands": ["sleep 60"], "timeout_ms": 90_000}
    upstream.script([Reply(tool_calls=[ToolCall("shell", json.dumps(sleep))]), Reply(text="the command finished")])
    with a.http() as on_a, b.http() as on_b:
        cid = create_container(on_a)
        victim = next(n for n in cluster.nodes if n.ip == SIMULATED_NODES[node_of(on_a, cid)])
        shell = {"type": "shell", "environment": {"type": "container_reference", "container_id": cid}}
        body = {"model": "scripted-model", "input": "run it", "tools": [shell], "stream": True}
        killed_at = None
        with on_b.stream("POST", "/v1/responses", json=body, timeout=120) as response:
            assert response.status_code == 200, response.read()
            events = []
            for event in _events(response):
                events.append(event)
                if event["type"] == "response.output_item.added" and event["item"]["type"] == "shell_call_output":
                    victim.kill()  # the 60 s command is running on it
                    killed_at = time.monotonic()
        assert killed_at is not None, [e["type"] for e in events]
        # Ray reports the host gone in ~4 s (docs/fleet.md); the deadline is CALL_TIMEOUT past the command's.
        assert time.monotonic() - killed_at < 30
        final = events[-1]
        assert final["type"] == "response.failed", [e["type"] for e in events[-5:]]
        error = final["response"]["error"]
        assert error["code"] in ("sandbox_unavailable", "container_lost"), error
        assert "may or may not have run" in error["message"] or cid in error["message"], error
        stored = on_a.get(f"/v1/responses/{final['response']['id']}").json()
        assert (stored["status"], stored["error"]) == ("failed", error)
        assert len([r for r in upstream.requests if "messages" in r]) == 1  # the model was not asked again
        upstream.reset()  # its second turn, never used, must not answer another module's request

        def lost() -> bool:
            late = run(on_a, cid, "echo late")
            return late.status_code == 410 and late.json()["error"]["code"] == "container_lost"

        eventually(lost, timeout=10 * CALL_TIMEOUT, what="the container to be lost")
        assert on_b.get(f"/v1/containers/{cid}").json()["status"] == "lost"
    outside, _wildcard = sockets_of(cluster.all_pids() | {srv.proc.pid for srv in replicas if srv.proc})
    assert outside == []
