"""Two API replicas collect one real node's egress decisions (each at its checks, every 0.5 s): the node
hands each decision to one of them, so each reaches the container's audit trail exactly once, whichever
replica took it and whether or not it holds the container; the replicas' metrics count it once too."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.conftest import Server
from tests.helpers import run
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.ray_cluster import HEAD_IP, RayNode, hosts_reported
from tests.responses import test_replicas
from tests.scripted_upstream import ScriptedUpstream
from tests.telemetry.scrape import scrape, value

pytestmark = pytest.mark.root

database = test_replicas.database
"""The session's PostgreSQL (``COVE_TEST_DB=postgres``), else one of the module's own."""

REFUSED = 40
"""Refused requests a background loop in the container makes after its command returned."""


@pytest.fixture(scope="module")
def replicas(node: RayNode, database: PostgresServer, upstream: ScriptedUpstream) -> Iterator[tuple[Server, Server]]:
    env = {"COVE_RAY_ADDRESS": node.cluster.address, "COVE_RAY_NODE_IP": HEAD_IP, "COVE_FLEET_CALL_TIMEOUT": "10",
           "COVE_FLEET_CHECK_SECONDS": "0.5"}
    with test_replicas.two_replicas(database, upstream, **env) as (a, b):
        for srv in (a, b):
            hosts_reported(srv, node.cluster, {"real"})
        yield a, b


def test_each_decision_is_recorded_once_whichever_replica_collects_it(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    policy = {"type": "allowlist", "allowed_domains": ["allowed.fleet.test"]}
    with a.http() as on_a, b.http() as on_b:

        def create() -> str | None:
            made = on_a.post("/v1/containers", json={"name": "egress", "network_policy": policy})
            return str(made.json()["id"]) if made.status_code == 200 else None

        cid = eventually(create, timeout=30, what="replica a to place the container (once its check saw the node)")
        try:
            def denied() -> float:
                return sum(value(scrape(srv.url), "cove_egress_decisions_total", decision="denied") for srv in replicas)

            before = denied()
            loop = (f"for i in $(seq 1 {REFUSED}); do curl -sS -m 5 -o /dev/null http://h$i.denied.fleet.test/; "
                    "sleep 0.05; done")
            run(on_b, cid, f"(sleep 0.5; {loop}) >/dev/null 2>&1 &")

            def hosts() -> Counter[str]:
                events = on_b.get(f"/v1/containers/{cid}/audit", params={"limit": 100}).json()["data"]
                return Counter(e["host"] for e in events if e["type"] == "egress" and not e["allowed"])

            every = {f"h{i}.denied.fleet.test" for i in range(1, REFUSED + 1)}
            eventually(lambda: set(hosts()) == every, timeout=60, what="every refusal in the audit trail")
            assert hosts() == Counter(every), hosts()
            assert denied() - before == REFUSED
        finally:
            on_a.delete(f"/v1/containers/{cid}")
