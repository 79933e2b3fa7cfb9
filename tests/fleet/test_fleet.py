"""The fleet on a real Ray cluster on this machine: a head and two container nodes on 127.0.0.2-4.

The nodes' hosts run the simulated engine (``cove.testing.fleet``: containers in memory) so that the
cluster, not runc, is what is tested: placement through the server's database, exec and streaming exec
forwarded through Ray, a node killed by its raylet's PID, a rejoin. One cluster for the module (it costs
about a gigabyte and ten seconds to start).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server, _server_env, data_dir, running_server
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.ray_cluster import (
    SIMULATED_NODES,
    RayCluster,
    RayNode,
    create_container,
    fleet_env,
    fleet_status,
    hosts_reported,
    node_of,
    node_resources,
    run,
    sockets_of,
    streamed,
)
from tests.scripted_upstream import ScriptedUpstream

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def fleet(cluster: RayCluster, upstream: ScriptedUpstream, postgres: PostgresServer | None) -> Iterator[Server]:
    with running_server(data_dir("cove-fleet"), {**_server_env(upstream, postgres), **fleet_env(cluster)}) as srv:
        # Nodes register with the head a moment after their raylets start; the server finds them on a check.
        hosts_reported(srv, cluster, set(SIMULATED_NODES))
        yield srv


def _metrics(http: httpx.Client) -> set[str]:
    """The fleet's lines of ``GET /metrics`` (a loopback client needs no token)."""
    answer = http.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {line for line in answer.text.splitlines() if line.startswith("cove_fleet_")}


def test_containers_spread_over_the_nodes_and_commands_stream_through_ray(fleet: Server) -> None:
    with fleet.http() as http:
        ids = [create_container(http) for _ in range(4)]
        assert sorted(node_of(http, cid) for cid in ids) == ["n2", "n2", "n3", "n3"]
        status = fleet_status(fleet)
        assert {node: (row["alive"], row["containers"]) for node, row in status.items()} == {
            "n2": (True, 2), "n3": (True, 2)}
        assert {'cove_fleet_nodes{state="alive"} 2.0', 'cove_fleet_nodes{state="lost"} 0.0',
                'cove_fleet_node_containers{node="n2",state="placed"} 2.0',
                'cove_fleet_node_slots{node="n3"} 20.0'} <= _metrics(http)
        assert run(http, ids[0], "echo hello").json()["output"][0]["stdout"] == "hello\n"
        assert streamed(http, ids[1], "echo streamed") == "streamed\n"
        for cid in ids:
            assert http.delete(f"/v1/containers/{cid}").status_code == 200
        assert {node: row["containers"] for node, row in fleet_status(fleet).items()} == {"n2": 0, "n3": 0}


def test_containers_from_a_snapshot_start_on_the_node_that_holds_it(fleet: Server) -> None:
    """The snapshot's files are on the node that took it: containers made from it (a create naming it,
    a fork) go there even when another node is emptier, and start with its files."""
    with fleet.http() as http:
        ids = [create_container(http) for _ in range(2)]
        where = {node_of(http, cid): cid for cid in ids}
        parent = where["n2"]
        uploaded = http.post(f"/v1/containers/{parent}/files", files={"file": ("note.txt", b"kept on n2")},
                             data={"path": "/mnt/data/note.txt"})
        assert uploaded.status_code == 200, uploaded.text
        snapshot = http.post(f"/v1/containers/{parent}/snapshots", json={"name": "on n2"}).json()["id"]
        assert http.delete(f"/v1/containers/{where['n3']}").status_code == 200  # n3 is now the emptier node

        made = http.post("/v1/containers", json={"name": "from snapshot", "snapshot_id": snapshot})
        assert made.status_code == 200, made.text
        forks = http.post(f"/v1/containers/{parent}/fork", json={"count": 2})
        assert forks.status_code == 200, forks.text
        children = [made.json()["id"], *(child["id"] for child in forks.json()["data"])]
        assert [node_of(http, cid) for cid in children] == ["n2", "n2", "n2"]
        for cid in children:
            (record,) = http.get(f"/v1/containers/{cid}/files").json()["data"]
            assert http.get(f"/v1/containers/{cid}/files/{record['id']}/content").content == b"kept on n2"
        # n2 has 16 free slots: a fork of 17 does not fit there, though n3 is empty (all or nothing).
        too_many = http.post(f"/v1/containers/{parent}/fork", json={"count": 17})
        assert (too_many.status_code, too_many.json()["error"]["code"]) == (429, "fleet_full"), too_many.text
        assert "Fleet node n2, which holds snapshot" in too_many.json()["error"]["message"]
        assert {node: row["containers"] for node, row in fleet_status(fleet).items()} == {"n2": 4, "n3": 0}

        assert http.delete(f"/v1/snapshots/{snapshot}").status_code == 200
        gone = http.post("/v1/containers", json={"name": "late", "snapshot_id": snapshot})
        assert (gone.status_code, gone.json()["error"]["code"]) == (404, "snapshot_not_found")
        for cid in [parent, *children]:
            assert http.delete(f"/v1/containers/{cid}").status_code == 200


def test_a_killed_node_fails_calls_in_time_loses_its_containers_and_rejoins_empty(
        fleet: Server, cluster: RayCluster) -> None:
    with fleet.http() as http:
        ids = [create_container(http) for _ in range(4)]
        where = {cid: node_of(http, cid) for cid in ids}
        doomed = [cid for cid in ids if where[cid] == "n2"]
        kept = [cid for cid in ids if where[cid] == "n3"]
        snapshot = http.post(f"/v1/containers/{doomed[1]}/snapshots", json={}).json()["id"]
        in_flight: list[tuple[float, httpx.Response]] = []

        def run_long() -> None:
            with fleet.http() as own:
                started = time.monotonic()
                response = run(own, doomed[0], "sleep 60", timeout_ms=90_000)
                in_flight.append((time.monotonic() - started, response))

        thread = threading.Thread(target=run_long)
        thread.start()
        node = next(n for n in cluster.nodes if n.ip == SIMULATED_NODES["n2"])
        node.kill()
        thread.join(timeout=60)
        ((elapsed, response),) = in_flight
        # Ray reports the actor gone in about 4 s; the 60 s command proves the call did not just finish.
        assert elapsed < 30, elapsed
        assert (response.status_code, response.json()["error"]["code"]) in (
            (503, "sandbox_unavailable"), (410, "container_lost")), response.text

        def lost() -> bool:
            answer = run(http, doomed[1], "echo late")
            return answer.status_code == 410 and answer.json()["error"]["code"] == "container_lost"

        eventually(lost, timeout=30, what="the killed node's containers to be lost")
        assert http.get(f"/v1/containers/{doomed[1]}").json()["status"] == "lost"
        forked = http.post("/v1/containers", json={"name": "from lost", "snapshot_id": snapshot})
        assert (forked.status_code, forked.json()["error"]["code"]) == (410, "snapshot_lost"), forked.text
        assert "n2" in forked.json()["error"]["message"]
        assert http.delete(f"/v1/snapshots/{snapshot}").status_code == 200  # only forgotten: n2 is gone
        assert http.get(f"/v1/snapshots/{snapshot}").status_code == 404
        assert run(http, kept[0], "echo alive").json()["output"][0]["stdout"] == "alive\n"
        fresh = [create_container(http) for _ in range(2)]
        assert {node_of(http, cid) for cid in fresh} == {"n3"}
        status = fleet_status(fleet)
        assert (status["n2"]["alive"], status["n2"]["lost"]) == (False, 2)
        assert {'cove_fleet_nodes{state="lost"} 1.0', 'cove_fleet_node_containers{node="n2",state="lost"} 2.0'} <= (
            _metrics(http))

        outside, _wildcard = sockets_of(cluster.all_pids() | {fleet.proc.pid if fleet.proc else 0})
        assert outside == []

        rejoined = RayNode(cluster, SIMULATED_NODES["n2"], node_resources("n2"), head=False)
        rejoined.start()
        cluster.nodes.append(rejoined)
        eventually(lambda: fleet_status(fleet)["n2"]["alive"], timeout=60, what="n2 to rejoin")
        assert fleet_status(fleet)["n2"]["containers"] == 0
        assert node_of(http, create_container(http)) == "n2"  # the emptiest node takes the next create
