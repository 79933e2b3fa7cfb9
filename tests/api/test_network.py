"""Network policy: an allowlisted name works through Cove's egress proxy; nothing else gets out.

The "internet" here is an HTTP server on the host's loopback, reached under test names that the
proxy resolves through its test-only mapping; no other address is ever contacted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import Server
from tests.helpers import run


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.headers.get('Host', '').split(':')[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def internet() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_allowlist_through_the_proxy(own_server: Server, internet: int) -> None:
    own_server.stop()
    own_server.env.update(COVE_EGRESS_TEST_HOSTS="allowed.test=127.0.0.1,api.wild.test=127.0.0.1,"
                                                 "blocked.test=127.0.0.1",
                          COVE_EGRESS_PORTS=f"80,443,{internet}")
    own_server.start()
    client = own_server.client()
    policy = {"type": "allowlist", "allowed_domains": ["allowed.test", "*.wild.test"]}
    container = client.containers.create(name="net", network_policy=policy)  # type: ignore[arg-type]
    assert container.network_policy is not None and container.network_policy.type == "allowlist"
    closed = client.containers.create(name="closed").id
    url = f"http://allowed.test:{internet}/"
    with own_server.http() as http:
        out = run(http, container.id,
                  f"curl -sS -m 10 {url}",
                  f"curl -sS -m 10 http://api.wild.test:{internet}/",
                  f"curl -sS -m 10 -o /dev/null -w '%{{http_code}}' http://blocked.test:{internet}/",
                  f"curl -sS -m 10 -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{internet}/ --proxy ''",
                  f"curl -sS -m 10 -p {url}",
                  "getent hosts allowed.test || echo no-dns",
                  f"curl -sS -m 10 -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{internet}/",
                  f"curl -sS -m 10 -o /dev/null -w '%{{http_code}}' http://2130706433:{internet}/ --noproxy ''",
                  f"curl -sS -m 10 -o /dev/null -w '%{{http_code}}' http://localhost:{internet}/ --noproxy ''",
                  "python3 -c \"import socket; socket.create_connection(('192.0.2.1', 80), timeout=3)\"")
        assert out[0]["stdout"] == "hello from allowed.test\n"
        assert out[1]["stdout"] == "hello from api.wild.test\n"
        assert out[2]["stdout"] == "403"
        assert out[3]["outcome"] != {"type": "exit", "exit_code": 0}  # its own loopback: nothing there
        assert out[4]["stdout"] == "hello from allowed.test\n"  # through a CONNECT tunnel
        assert out[5]["stdout"] == "no-dns\n"
        assert out[6]["stdout"] == "000"  # not proxied: the container's own loopback, where nothing listens
        assert out[7]["stdout"] == out[8]["stdout"] == "403"  # a raw IP, a name for loopback: refused
        assert "Network is unreachable" in str(out[9]["stderr"])  # no route anywhere: nothing leaves
        no_policy = run(http, closed, f"curl -sS -m 5 {url}")[0]
        assert no_policy["outcome"] != {"type": "exit", "exit_code": 0}
        events = http.get(f"/v1/containers/{container.id}/audit", params={"limit": 100}).json()["data"]
    egress = [(e["host"], e["allowed"]) for e in events if e["type"] == "egress"]
    assert ("allowed.test", True) in egress and ("blocked.test", False) in egress


def test_operator_ceiling(own_server: Server) -> None:
    rules = own_server.data_dir.with_name(own_server.data_dir.name + "-projects.toml")
    rules.write_text('[projects.alpha]\nallowed_domains = ["*.corp.test", "docs.test"]\n')
    own_server.stop()
    own_server.env["COVE_PROJECTS_FILE"] = str(rules)
    own_server.start()
    with own_server.http() as http:
        for domains, ok in ((["docs.test", "api.corp.test", "*.eu.corp.test"], True),
                            (["docs.test", "other.test"], False), (["*.big.test"], False)):
            response = http.post("/v1/containers", json={"name": "c", "network_policy": {
                "type": "allowlist", "allowed_domains": domains}})
            assert (response.status_code == 200) == ok, (domains, response.text)
            if not ok:
                error = response.json()["error"]
                assert error["code"] == "domain_not_allowed"
                assert error["param"].startswith("network_policy.allowed_domains[")
        response = http.post("/v1/responses", json={"model": "scripted-model", "input": "x", "tools": [
            {"type": "shell", "environment": {"type": "container_auto", "network_policy": {
                "type": "allowlist", "allowed_domains": ["evil.test"]}}}]})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "tools[0].environment.network_policy.allowed_domains[0]"
    rules.unlink()
