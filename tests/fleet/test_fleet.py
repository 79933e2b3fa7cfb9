"""The fleet on a real Ray cluster on this machine: a head and two container nodes on 127.0.0.2-4.

The nodes' hosts run the simulated engine (``cove.testing.fleet``: containers in memory) so that the
cluster, not runc, is what is tested: placement through the server's database, exec and streaming exec
forwarded through Ray, a node killed by its raylet's PID, a rejoin. One cluster for the module (it costs
about a gigabyte and ten seconds to start).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server, _server_env, data_dir, running_server
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.ray_cluster import HEAD_IP, RayCluster, RayNode, fleet_status, sockets_of
from tests.scripted_upstream import ScriptedUpstream

pytestmark = pytest.mark.root

NODES = {"n2": "127.0.0.3", "n3": "127.0.0.4"}
CALL_TIMEOUT = 3.0


def _resources(node: str) -> dict[str, float]:
    return {f"cove_host:{node}": 1, "cove_slots": 20}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    ray = RayCluster()
    try:
        ray.add(HEAD_IP, head=True)
        for node, ip in NODES.items():
            ray.add(ip, _resources(node))
        yield ray
    finally:
        ray.stop()


@pytest.fixture(scope="module")
def fleet(cluster: RayCluster, upstream: ScriptedUpstream, postgres: PostgresServer | None) -> Iterator[Server]:
    env = {**_server_env(upstream, postgres), "COVE_RAY_ADDRESS": cluster.address, "COVE_RAY_NODE_IP": HEAD_IP,
           "COVE_FLEET_HOST_ENGINE": "cove.testing.fleet:simulated_host",
           "COVE_FLEET_CALL_TIMEOUT": str(CALL_TIMEOUT), "COVE_FLEET_CHECK_SECONDS": "0.5"}
    with running_server(data_dir("cove-fleet"), env) as srv:
        # Nodes register with the head a moment after their raylets start; the server finds them on a check.
        eventually(lambda: {node: row["alive"] for node, row in fleet_status(srv).items()} == {"n2": True, "n3": True},
                   timeout=60, what="both nodes' hosts to report")
        yield srv


def _create(http: httpx.Client) -> str:
    response = http.post("/v1/containers", json={"name": "fleet"})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _exec(http: httpx.Client, cid: str, command: str, timeout_ms: int = 10_000) -> httpx.Response:
    return http.post(f"/v1/containers/{cid}/exec", json={"commands": [command], "timeout_ms": timeout_ms})


def _node_of(http: httpx.Client, cid: str) -> str:
    response = _exec(http, cid, "hostname")
    assert response.status_code == 200, response.text
    return str(response.json()["output"][0]["stdout"]).strip()


def test_containers_spread_over_the_nodes_and_commands_stream_through_ray(fleet: Server) -> None:
    with fleet.http() as http:
        ids = [_create(http) for _ in range(4)]
        assert sorted(_node_of(http, cid) for cid in ids) == ["n2", "n2", "n3", "n3"]
        status = fleet_status(fleet)
        assert {node: (row["alive"], row["containers"]) for node, row in status.items()} == {
            "n2": (True, 2), "n3": (True, 2)}
        assert _exec(http, ids[0], "echo hello").json()["output"][0]["stdout"] == "hello\n"
        body = {"commands": ["echo streamed"], "stream": True, "timeout_ms": 10_000}
        with http.stream("POST", f"/v1/containers/{ids[1]}/exec", json=body) as response:
            events = [json.loads(line[len("data: "):]) for line in response.iter_lines() if line.startswith("data: {")]
        deltas = "".join(event["delta"].get("stdout", "") for event in events if event["type"].endswith("delta"))
        assert deltas == "streamed\n"
        for cid in ids:
            assert http.delete(f"/v1/containers/{cid}").status_code == 200
        assert {node: row["containers"] for node, row in fleet_status(fleet).items()} == {"n2": 0, "n3": 0}


def test_a_killed_node_fails_calls_in_time_loses_its_containers_and_rejoins_empty(
        fleet: Server, cluster: RayCluster) -> None:
    with fleet.http() as http:
        ids = [_create(http) for _ in range(4)]
        where = {cid: _node_of(http, cid) for cid in ids}
        doomed = [cid for cid in ids if where[cid] == "n2"]
        kept = [cid for cid in ids if where[cid] == "n3"]
        in_flight: list[tuple[float, httpx.Response]] = []

        def run_long() -> None:
            with fleet.http() as own:
                started = time.monotonic()
                response = _exec(own, doomed[0], "sleep 60", timeout_ms=90_000)
                in_flight.append((time.monotonic() - started, response))

        thread = threading.Thread(target=run_long)
        thread.start()
        node = next(n for n in cluster.nodes if n.ip == NODES["n2"])
        node.kill()
        thread.join(timeout=60)
        ((elapsed, response),) = in_flight
        # Ray reports the actor gone in about 4 s; the 60 s command proves the call did not just finish.
        assert elapsed < 30, elapsed
        assert (response.status_code, response.json()["error"]["code"]) in (
            (503, "sandbox_unavailable"), (410, "container_lost")), response.text

        def lost() -> bool:
            answer = _exec(http, doomed[1], "echo late")
            return answer.status_code == 410 and answer.json()["error"]["code"] == "container_lost"

        eventually(lost, timeout=30, what="the killed node's containers to be lost")
        assert http.get(f"/v1/containers/{doomed[1]}").json()["status"] == "lost"
        assert _exec(http, kept[0], "echo alive").json()["output"][0]["stdout"] == "alive\n"
        fresh = [_create(http) for _ in range(2)]
        assert {_node_of(http, cid) for cid in fresh} == {"n3"}
        status = fleet_status(fleet)
        assert (status["n2"]["alive"], status["n2"]["lost"]) == (False, 2)

        outside, _wildcard = sockets_of(cluster.all_pids() | {fleet.proc.pid if fleet.proc else 0})
        assert outside == []

        rejoined = RayNode(cluster, NODES["n2"], _resources("n2"), head=False)
        rejoined.start()
        cluster.nodes.append(rejoined)
        eventually(lambda: fleet_status(fleet)["n2"]["alive"], timeout=60, what="n2 to rejoin")
        assert fleet_status(fleet)["n2"]["containers"] == 0
        assert _node_of(http, _create(http)) == "n2"  # the emptiest node takes the next create
