"""Network policy: allowlisted names work through Cove's egress proxy with ordinary tools; nothing else gets out.

The "internet" is a host in a network namespace this session made (tests/internet.py), serving
HTTP and HTTPS under test names; its CA is installed in the container the way a user would add a
private CA, and then plain curl, pip, git and npm commands work. No other address is ever contacted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.helpers import run
from tests.internet import GIT_FILE, Internet

pytestmark = pytest.mark.root


def test_allowlist_with_curl_pip_git_and_npm(own_server: Server, internet: Internet) -> None:
    own_server.stop()
    own_server.env.update(internet.server_env())
    own_server.start()
    client = own_server.client()
    policy = {"type": "allowlist",
              "allowed_domains": ["pypi.cove.test", "git.cove.test", "npm.cove.test", "*.wild.cove.test"]}
    container = client.containers.create(name="net", network_policy=policy)  # type: ignore[arg-type]
    assert container.network_policy is not None and container.network_policy.type == "allowlist"
    client.containers.files.create(container.id, file=("internet-ca.pem", internet.ca.read_bytes()))
    before = len(internet.requests())
    with own_server.http() as http:
        out = run(http, container.id,
                  "cp /mnt/data/internet-ca.pem /usr/local/share/ca-certificates/internet.crt"
                  " && update-ca-certificates >/dev/null",
                  "curl -sS -m 10 http://pypi.cove.test/echo",
                  "curl -sS -m 10 https://pypi.cove.test/simple/coveprobe/",
                  "curl -sS -m 10 http://a.wild.cove.test/echo",
                  "pip install -q --no-cache-dir --index-url https://pypi.cove.test/simple/ coveprobe"
                  " && python3 -c 'import coveprobe; print(coveprobe.VALUE)'",
                  "git clone -q https://git.cove.test/repo.git /tmp/repo && cat /tmp/repo/README",
                  "mkdir -p /tmp/app && cd /tmp/app && npm install -s --no-audit --no-fund --no-update-notifier"
                  " --registry https://npm.cove.test/npm/ coveprobe && node -p 'require(\"coveprobe\")'",
            timeout_ms=120_000)
        for entry in out:
            assert entry["outcome"] == {"type": "exit", "exit_code": 0}, entry["stderr"]
        assert json.loads(str(out[1]["stdout"]))["path"] == "/echo"
        assert "coveprobe-1.0-py3-none-any.whl" in str(out[2]["stdout"])
        assert json.loads(str(out[3]["stdout"]))["headers"][0] == ["Host", "a.wild.cove.test"]
        assert out[4]["stdout"] == "1.0\n"
        assert out[5]["stdout"] == GIT_FILE
        assert str(out[6]["stdout"]).endswith("npm ok\n")
        events = http.get(f"/v1/containers/{container.id}/audit", params={"limit": 100}).json()["data"]
    arrived = internet.requests()[before:]
    paths = {entry["path"].partition("?")[0] for entry in arrived}
    assert paths >= {"/echo", "/simple/coveprobe/", "/repo.git/info/refs", "/npm/coveprobe",
                     "/npm/tarballs/coveprobe-1.0.0.tgz"}
    egress = {(e["host"], e["method"], e["allowed"]) for e in events if e["type"] == "egress"}
    assert {("pypi.cove.test", "GET", True), ("pypi.cove.test", "CONNECT", True),
            ("git.cove.test", "CONNECT", True)} <= egress


def test_everything_else_is_refused(own_server: Server, internet: Internet) -> None:
    own_server.stop()
    own_server.env.update(internet.server_env())
    own_server.start()
    client = own_server.client()
    policy = {"type": "allowlist", "allowed_domains": ["pypi.cove.test"]}
    container = client.containers.create(name="net", network_policy=policy)  # type: ignore[arg-type]
    closed = client.containers.create(name="closed").id
    code = "-o /dev/null -w '%{http_code}'"
    before = len(internet.requests())
    with own_server.http() as http:
        out = run(http, container.id,
                  f"curl -sS -m 10 {code} http://blocked.cove.test/echo",
                  "curl -sS -m 10 -k https://blocked.cove.test/echo",
                  f"curl -sS -m 10 {code} http://{internet.address}/echo",
                  f"curl -sS -m 5 --noproxy '*' http://{internet.address}/echo",
                  f"curl -sS -m 5 --noproxy '*' http://{internet.gateway}/",
                  f"curl -sS -m 10 {code} http://localhost:{own_server.port}/healthz --noproxy ''",
                  f"curl -sS -m 10 {code} http://pypi.cove.test:{own_server.port}/",
                  "getent hosts pypi.cove.test || echo no-dns",
                  "python3 -c \"import socket; socket.create_connection(('192.0.2.1', 80), timeout=3)\"",
                  "python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)\"")
        assert out[0]["stdout"] == "403"  # a name that is not allowlisted
        assert "CONNECT tunnel failed, response 403" in str(out[1]["stderr"])
        assert out[2]["stdout"] == "403"  # the test host's raw address
        for entry in out[3:5]:  # around the proxy: no route to the host or to this machine
            assert "Couldn't connect" in str(entry["stderr"]) or "unreachable" in str(entry["stderr"]), entry
        assert out[5]["stdout"] == "403"  # Cove's own API by a name for loopback
        assert out[6]["stdout"] == "403"  # an allowlisted name on a port that is not allowed
        assert out[7]["stdout"] == "no-dns\n"
        assert "Network is unreachable" in str(out[8]["stderr"])
        assert "PermissionError" in str(out[9]["stderr"])  # no raw sockets, even as container root
        no_policy = run(http, closed, "curl -sS -m 5 http://pypi.cove.test/echo")[0]
        assert no_policy["outcome"] != {"type": "exit", "exit_code": 0}
        events = http.get(f"/v1/containers/{container.id}/audit", params={"limit": 100}).json()["data"]
    assert internet.requests()[before:] == []  # nothing refused ever reached the host
    refused = {(e["host"], e["allowed"]) for e in events if e["type"] == "egress"}
    assert {("blocked.cove.test", False), ("localhost", False)} <= refused
    cove = Path(sys.executable).parent / "cove"
    table = subprocess.run([str(cove), "audit", container.id], env={**own_server.env, "COLUMNS": "250"},
                           capture_output=True, text=True, check=True).stdout
    assert "GET blocked.cove.test:80" in table and "refused: blocked.cove.test is not in the allowlist" in table


def test_operator_ceiling(own_server: Server) -> None:
    rules = own_server.data_dir.with_name(own_server.data_dir.name + "-projects.toml")
    rules.write_text('[projects.alpha]\nallowed_domains = ["*.corp.test", "docs.test"]\ndomain_secrets = false\n')
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
        secret_policy = {"type": "allowlist", "allowed_domains": ["docs.test"],
                         "domain_secrets": [{"domain": "docs.test", "name": "K", "value": "v"}]}
        response = http.post("/v1/containers", json={"name": "c", "network_policy": secret_policy})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "domain_secrets_not_allowed"
        response = http.post("/v1/responses", json={"model": "scripted-model", "input": "x", "tools": [
            {"type": "shell", "environment": {"type": "container_auto", "network_policy": secret_policy}}]})
        assert response.json()["error"]["param"] == "tools[0].environment.network_policy.domain_secrets"
    with own_server.http("beta") as http:  # no rules for this project: secrets are allowed
        assert http.post("/v1/containers", json={"name": "c", "network_policy": secret_policy}).status_code == 200
    rules.unlink()
