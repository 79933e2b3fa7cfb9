"""Egress decisions on a real fleet node reach the container's audit trail, as on one machine.

The node's proxy decides in the node's ``SandboxHost``; the API server collects the decisions (as a
command of a container with a network policy ends, and at each fleet check) and records each once,
under the container's project, credited to the response whose tool call made it. The allowed
destination is ``NODE_SITE``, which the node's proxy finds at the node's loopback address, where this
test serves HTTP on port 80: nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.helpers import run
from tests.polling import eventually
from tests.ray_cluster import NODE_SITE, REAL_NODE_IP, RayNode, sockets_of
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

DENIED = "denied.fleet.test"
"""Not in the allowlist: refused by the node's proxy without any network."""
CODE = "-o /dev/null -w '%{http_code}'"


class _Site(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"site\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def site() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer((REAL_NODE_IP, 80), _Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _egress(http: httpx.Client, cid: str) -> list[dict[str, Any]]:
    events = http.get(f"/v1/containers/{cid}/audit", params={"limit": 100}).json()["data"]
    return [event for event in events if event["type"] == "egress"]


def test_a_nodes_egress_decisions_reach_the_containers_audit_trail_once(
        fleet: Server, node: RayNode, site: ThreadingHTTPServer, upstream: ScriptedUpstream) -> None:
    policy = {"type": "allowlist", "allowed_domains": [NODE_SITE]}
    with fleet.http() as http:
        created = http.post("/v1/containers", json={"name": "egress", "network_policy": policy})
        assert created.status_code == 200, created.text
        cid = created.json()["id"]
        try:
            out = run(http, cid, f"curl -sS -m 10 {CODE} http://{NODE_SITE}/",
                      f"curl -sS -m 10 {CODE} http://{DENIED}/", timeout_ms=30_000)
            assert [entry["stdout"] for entry in out] == ["200", "403"], out

            # Collected as the command ended: there when exec answers, under this project, no response.
            events = _egress(http, cid)
            seen = {(e["host"], e["method"], e["port"], e["allowed"], e["response_id"]) for e in events}
            assert seen == {(NODE_SITE, "GET", 80, True, None), (DENIED, "GET", 80, False, None)}, events
            allowed = next(e for e in events if e["allowed"])
            assert allowed["reason"] == "allowed" and allowed["address"] == REAL_NODE_IP
            denied = next(e for e in events if not e["allowed"])
            assert denied["reason"] == f"{DENIED} is not in the allowlist"

            # A response's tool call: its decision is credited to the response.
            upstream.reset()
            call = {"commands": [f"curl -sS -m 10 {CODE} http://{NODE_SITE}/again"]}
            upstream.script([Reply(tool_calls=[ToolCall("shell", json.dumps(call))]), Reply(text="fetched")])
            shell = {"type": "shell", "environment": {"type": "container_reference", "container_id": cid}}
            answered = http.post("/v1/responses", json={"model": "scripted-model", "input": "fetch",
                                                        "tools": [shell]})
            assert answered.status_code == 200, answered.text
            response = answered.json()
            assert response["status"] == "completed", response
            events = _egress(http, cid)
            assert [(e["host"], e["allowed"]) for e in events if e["response_id"] == response["id"]] == [
                (NODE_SITE, True)], events

            # A refusal made after the command returned is collected by the fleet check (every 0.5 s);
            # checks hand nothing out again: each decision appears once.
            late = f"late.{DENIED}"
            run(http, cid, f"(sleep 1; curl -sS -m 10 http://{late}/) >/dev/null 2>&1 &")
            eventually(lambda: any(e["host"] == late for e in _egress(http, cid)), timeout=30,
                       what="the late refusal in the audit trail")
            counts = Counter((e["host"], e["allowed"]) for e in _egress(http, cid))
            assert counts == {(NODE_SITE, True): 2, (DENIED, False): 1, (late, False): 1}, counts
        finally:
            http.delete(f"/v1/containers/{cid}")
    outside, _wildcard = sockets_of(node.cluster.all_pids() | {fleet.proc.pid if fleet.proc else 0})
    assert outside == [], outside
