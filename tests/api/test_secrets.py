"""Domain secrets: the test host gets the real value; the container, the model, the stored response,
the audit trail, the server's log, the database and the container's files hold only the placeholder.

The secret's host is api.cove.test on the session's test internet (tests/internet.py). The proxy
intercepts TLS only for it, with a certificate from Cove's CA, which only this container trusts.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.helpers import run
from tests.internet import Internet
from tests.polling import eventually
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

CHECK = "https://api.cove.test/v1/check"
CODE = "-o /dev/null -w '%{http_code}'"


def _shell(*commands: str) -> Reply:
    return Reply(tool_calls=[ToolCall(name="shell", arguments=json.dumps({"commands": list(commands)}))])


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    """Files under ``root`` holding ``needle``. A container's writes all land in its ``upper``
    directory (``containers/<id>/disk/upper``, mounted), which is scanned; its ``rootfs`` (the image
    under them) and the disk images (``disks/``, the sparse filesystems holding those same upper
    directories, in the pool ``disks.xfs``) are skipped."""
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = [name for name in dirs if name != "rootfs" and Path(directory, name) != root / "disks"]
        for name in files:
            path = Path(directory) / name
            if path == root / "disks.xfs" or path.is_symlink() or not path.is_file():
                continue
            with path.open("rb") as source:
                if needle in source.read():
                    found.append(path)
    return found


def _authorizations(internet: Internet, since: int, host: str) -> list[tuple[str, str]]:
    """(scheme, Authorization header) of each request ``host`` got after the first ``since``."""
    result = []
    for entry in internet.requests()[since:]:
        headers = dict(entry["headers"])
        if headers.get("Host") == host:
            result.append((entry["scheme"], headers.get("Authorization", "")))
    return result


def test_secret_reaches_its_domain_and_nothing_else_sees_it(own_server: Server, internet: Internet,
                                                            upstream: ScriptedUpstream) -> None:
    own_server.stop()
    own_server.env.update(internet.server_env())
    own_server.start()
    value = f"sk-test-{secrets.token_hex(16)}"
    policy = {"type": "allowlist", "allowed_domains": ["api.cove.test", "other.cove.test"],
              "domain_secrets": [{"domain": "api.cove.test", "name": "API_TOKEN", "value": value}]}
    tool = {"type": "shell", "environment": {"type": "container_auto", "network_policy": policy}}
    before = len(internet.requests())
    upstream.script([_shell("printenv API_TOKEN",
                            f"curl -sS -m 10 {CODE} -H \"Authorization: Bearer $API_TOKEN\" {CHECK}",
                            "curl -sS -m 10 -k -o /dev/null -H \"Authorization: Bearer $API_TOKEN\" "
                            "https://other.cove.test/",
                            "curl -sS -m 10 -o /dev/null -H \"Authorization: Bearer $API_TOKEN\" "
                            "http://api.cove.test/plain",
                            "curl -sS -m 10 -H \"Authorization: Bearer $API_TOKEN\" https://api.cove.test/echo"),
                     Reply(text="checked")])
    with own_server.http() as http:
        created = http.post("/v1/responses", json={"model": "scripted-model", "input": "check the API",
                                                   "tools": [tool]})
        assert created.status_code == 200, created.text
        response = created.json()
        out = [entry for item in response["output"] if item["type"] == "shell_call_output"
               for entry in item["output"]]
        placeholder = out[0]["stdout"].strip()
        assert placeholder.startswith("cove_secret_") and value not in placeholder
        assert out[1]["stdout"] == "404", out[1]  # it got there over TLS (the test host has no such page)
        assert _authorizations(internet, before, "api.cove.test") == [
            ("https", f"Bearer {value}"), ("http", f"Bearer {placeholder}"),  # never in the clear
            ("https", f"Bearer {value}")]
        # The test host echoes what it got, secret included; the output shows the placeholder instead.
        assert dict(json.loads(out[4]["stdout"])["headers"])["Authorization"] == f"Bearer {placeholder}"
        assert _authorizations(internet, before, "other.cove.test") == [("https", f"Bearer {placeholder}")]

        container_id = response["container_id"]
        stored = http.get(f"/v1/responses/{response['id']}").text
        items = http.get(f"/v1/responses/{response['id']}/input_items").text
        audit = http.get(f"/v1/containers/{container_id}/audit", params={"limit": 100}).json()["data"]
        container = http.get(f"/v1/containers/{container_id}").json()
    shown = json.loads(stored)["tools"][0]["environment"]["network_policy"]["domain_secrets"][0]
    assert shown == {"domain": "api.cove.test", "name": "API_TOKEN", "value": "[redacted]"}
    assert container["network_policy"] == {"type": "allowlist",
                                           "allowed_domains": ["api.cove.test", "other.cove.test"]}
    assert any(e["type"] == "egress" and e["reason"] == "allowed with secrets API_TOKEN"
               and e["response_id"] == response["id"] for e in audit)
    for text in (stored, items, json.dumps(audit), json.dumps(upstream.requests), own_server.log.read_text()):
        assert value not in text
    data_dir = own_server.data_dir
    assert _files_holding(data_dir, value.encode()) == []  # the database, the container's files
    assert (data_dir / "secrets.key").stat().st_mode & 0o077 == 0
    assert (data_dir / "egress-ca" / "ca.key").stat().st_mode & 0o077 == 0

    # The secret outlives a restart (sealed in the store), and the container still holds only the placeholder.
    own_server.stop()
    own_server.start()
    before = len(internet.requests())
    with own_server.http() as http:
        again = run(http, container_id, f"curl -sS -m 10 {CODE} -H \"X-Key: $API_TOKEN\" {CHECK}",
                    f"curl -sS -m 10 {CODE} -u \"x-token:$API_TOKEN\" {CHECK}",
                    "printenv API_TOKEN", "printenv API_TOKEN | rev > /root/kept")
    assert again[0]["stdout"] == again[1]["stdout"] == "404" and again[2]["stdout"] == f"{placeholder}\n"
    arrived = [dict(e["headers"]) for e in internet.requests()[before:]]
    assert arrived[0]["X-Key"] == value
    assert base64.b64decode(arrived[1]["Authorization"].removeprefix("Basic ")) == f"x-token:{value}".encode()
    # The scan above does see what a container writes:
    assert _files_holding(data_dir, placeholder[::-1].encode())

    # A fork has the same secret (sealed again for the child): the same placeholder works from it, and
    # the value never enters it.
    before = len(internet.requests())
    with own_server.http() as http:
        child = http.post(f"/v1/containers/{container_id}/fork").raise_for_status().json()["data"][0]
        assert child["network_policy"] == container["network_policy"]
        forked = run(http, child["id"], "printenv API_TOKEN", f"curl -sS -m 10 {CODE} -H \"X-Key: $API_TOKEN\" {CHECK}")
    assert forked[0]["stdout"] == f"{placeholder}\n" and forked[1]["stdout"] == "404"
    assert [dict(e["headers"])["X-Key"] for e in internet.requests()[before:]] == [value]
    assert _files_holding(data_dir, value.encode()) == []


def test_only_containers_with_secrets_trust_coves_ca(own_server: Server, internet: Internet) -> None:
    own_server.stop()
    own_server.env.update(internet.server_env())
    own_server.start()
    client = own_server.client()
    with_secret: dict[str, Any] = {"type": "allowlist", "allowed_domains": ["api.cove.test"], "domain_secrets": [
        {"domain": "api.cove.test", "name": "TOKEN", "value": "v-" + secrets.token_hex(8)}]}
    secret_box = client.containers.create(name="s", network_policy=with_secret)  # type: ignore[arg-type]
    plain = client.containers.create(name="p", network_policy={
        "type": "allowlist", "allowed_domains": ["api.cove.test"]})
    with own_server.http() as http:
        trusting = run(http, secret_box.id, "echo $SSL_CERT_FILE", "grep -c 'BEGIN CERT' $SSL_CERT_FILE",
                       f"curl -sS -m 10 {CODE} {CHECK}")
        other = run(http, plain.id, "ls /etc/cove 2>&1; echo ${SSL_CERT_FILE}",
                    f"curl -sS -m 10 {CODE} {CHECK}")
    assert trusting[0]["stdout"] == "/etc/cove/ca-certificates.crt\n"
    assert int(str(trusting[1]["stdout"])) > 1  # the image's CAs and Cove's
    assert trusting[2]["stdout"] == "404"
    assert "No such file" in str(other[0]["stdout"])
    # Without secrets the proxy only tunnels: the container sees the real certificate, from a CA it
    # does not know here, and the test host's own certificate is never replaced.
    assert other[1]["stdout"] == "000" and "certificate" in str(other[1]["stderr"])


def test_bad_secrets_are_refused_without_echoing_them(http: Any) -> None:
    value = "sk-" + secrets.token_hex(12)
    cases = [
        ({"domain": "elsewhere.test", "name": "K", "value": value}, "network_policy.domain_secrets[0].domain"),
        ({"domain": "api.cove.test", "name": "1K", "value": value}, "network_policy.domain_secrets[0].name"),
        ({"domain": "api.cove.test", "name": "K", "value": value + "\r\nX-Evil: 1"},
         "network_policy.domain_secrets[0].value"),
        ({"domain": "api.cove.test", "name": "K", "value": value, "extra": 1}, "network_policy.domain_secrets[0]"),
    ]
    for secret, param in cases:
        body = {"name": "bad", "network_policy": {"type": "allowlist", "allowed_domains": ["api.cove.test"],
                                                  "domain_secrets": [secret]}}
        response = http.post("/v1/containers", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
        assert value not in response.text
        tool = {"type": "shell", "environment": {"type": "container_auto", "network_policy": body["network_policy"]}}
        response = http.post("/v1/responses", json={"model": "scripted-model", "input": "x", "tools": [tool]})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == f"tools[0].environment.{param}"
        assert value not in response.text


def test_a_lost_key_is_a_clear_error_and_loses_nothing(own_server: Server, internet: Internet) -> None:
    own_server.stop()
    own_server.env.update(internet.server_env())
    own_server.start()
    policy = {"type": "allowlist", "allowed_domains": ["api.cove.test"], "domain_secrets": [
        {"domain": "api.cove.test", "name": "TOKEN", "value": "v-" + secrets.token_hex(8)}]}
    with own_server.http() as http:
        container_id = http.post("/v1/containers", json={"name": "keyed", "network_policy": policy}).json()["id"]
    key = own_server.data_dir / "secrets.key"
    kept = key.read_bytes()
    own_server.stop()
    key.unlink()  # the operator lost the key: the server makes a new one
    own_server.start()
    with own_server.http() as http:
        failed = http.post(f"/v1/containers/{container_id}/exec", json={"commands": ["true"]})
        assert failed.status_code == 500
        assert "cannot open" in failed.json()["error"]["message"]
        assert http.get(f"/v1/containers/{container_id}").status_code == 200
    own_server.stop()
    key.write_bytes(kept)
    own_server.start()
    with own_server.http() as http:
        assert run(http, container_id, f"curl -sS -m 10 {CODE} {CHECK}")[0]["stdout"] == "404"


def test_pip_with_a_token_in_the_index_url(own_server: Server, internet: Internet) -> None:
    own_server.stop()
    own_server.env.update(internet.server_env())
    own_server.start()
    value = "pypi-" + secrets.token_hex(12)
    policy = {"type": "allowlist", "allowed_domains": ["pypi.cove.test"], "domain_secrets": [
        {"domain": "pypi.cove.test", "name": "PYPI_TOKEN", "value": value}]}
    before = len(internet.requests())
    with own_server.http() as http:
        container_id = http.post("/v1/containers", json={"name": "pip", "network_policy": policy}).json()["id"]
        out = run(http, container_id, "pip install -q --no-cache-dir --index-url "
                  "https://__token__:$PYPI_TOKEN@pypi.cove.test/simple/ coveprobe"
                  " && python3 -c 'import coveprobe; print(coveprobe.VALUE)'", timeout_ms=120_000)[0]
    assert out["stdout"] == "1.0\n", out["stderr"]
    credentials = {base64.b64decode(dict(e["headers"])["Authorization"].removeprefix("Basic "))
                   for e in internet.requests()[before:]}
    assert credentials == {f"__token__:{value}".encode()}  # the index page and the wheel


def test_secrets_in_a_code_interpreter_container_are_redacted(server: Server, http: Any,
                                                               upstream: ScriptedUpstream) -> None:
    value = "ci-" + secrets.token_hex(12)
    tool = {"type": "code_interpreter", "container": {"type": "auto", "network_policy": {
        "type": "allowlist", "allowed_domains": ["api.cove.test"],
        "domain_secrets": [{"domain": "api.cove.test", "name": "KEY", "value": value}]}}}
    upstream.script([Reply(text="nothing to run")])
    created = http.post("/v1/responses", json={"model": "scripted-model", "input": "hi", "tools": [tool],
                                               "background": True})
    assert created.status_code == 200 and value not in created.text
    response_id = created.json()["id"]
    body = eventually(lambda: (current := http.get(f"/v1/responses/{response_id}").json())["status"] == "completed"
                      and current, what="the background response to complete")
    assert body["tools"][0]["container"]["network_policy"]["domain_secrets"][0]["value"] == "[redacted]"
    assert value not in json.dumps(body) and value not in json.dumps(upstream.requests)
    stored = b"".join(path.read_bytes() for path in server.data_dir.glob("cove.db*"))
    assert value.encode() not in stored  # the queued request kept it sealed
