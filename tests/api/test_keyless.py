"""Keyless mode (no ``COVE_API_KEYS``) serves this machine only: requests must come over loopback and
name a loopback host (``Host``, and ``Origin`` when a browser sends one), so a web page that rebinds
its name to 127.0.0.1 gets 403, not exec. The guard is the app's own: under another ASGI server,
bound elsewhere, every request is refused. The API's description needs a key unless
``COVE_PUBLIC_DOCS=1``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from cove.api.app import create_app
from cove.config import Settings
from tests.conftest import Server, data_dir, running_server
from tests.scripted_upstream import ScriptedUpstream


def _ask(app_settings: Settings, url: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """One request to the app as an ASGI server would hand it over (the server address from ``url``);
    without a lifespan, so only what answers before the services exist can be asked."""
    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(app_settings))
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            return await client.get(path, headers=headers or {})
    return asyncio.run(ask())


def test_keyless_app_bound_elsewhere_refuses_everything(tmp_path: Path) -> None:
    keyless = Settings(data_dir=tmp_path, api_keys="")
    for url in ("http://10.1.2.3:8080", "http://[2001:db8::1]:8080", "http://0.0.0.0"):
        answer = _ask(keyless, url, "/healthz", {"host": "127.0.0.1"})
        assert answer.status_code == 403, (url, answer.text)
        assert answer.json()["error"]["code"] == "keyless_not_loopback"
    assert _ask(keyless, "http://127.0.0.1:8080", "/healthz").status_code == 200
    keyed = Settings(data_dir=tmp_path, api_keys="k=p")
    assert _ask(keyed, "http://10.1.2.3:8080", "/healthz").status_code == 200


def test_docs_need_a_key_unless_public(tmp_path: Path) -> None:
    keyed = Settings(data_dir=tmp_path, api_keys="k=p")
    public = Settings(data_dir=tmp_path, api_keys="k=p", public_docs=True)
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert _ask(keyed, "http://10.1.2.3", path).status_code == 401
        assert _ask(keyed, "http://10.1.2.3", path, {"authorization": "Bearer wrong"}).status_code == 401
        assert _ask(keyed, "http://10.1.2.3", path, {"authorization": "Bearer k"}).status_code == 200
        assert _ask(public, "http://10.1.2.3", path).status_code == 200
    spec = _ask(keyed, "http://10.1.2.3", "/openapi.json", {"authorization": "Bearer k"}).json()
    assert "/v1/responses" in spec["paths"] and "/openapi.json" not in spec["paths"]


@pytest.fixture
def keyless_server(upstream: ScriptedUpstream) -> Iterator[Server]:
    env = {"COVE_API_KEYS": "", "COVE_UPSTREAM_URL": upstream.url, "COVE_WARM_POOL": "0"}
    with running_server(data_dir("cove-keyless"), env) as srv:
        yield srv


@pytest.mark.root
def test_a_rebound_page_gets_403_not_exec(keyless_server: Server) -> None:
    port = keyless_server.port
    with httpx.Client(base_url=keyless_server.url, timeout=60) as http:
        made = http.post("/v1/containers", json={"name": "local"})
        assert made.status_code == 200, made.text
        exec_path = f"/v1/containers/{made.json()['id']}/exec"
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost", f"[::1]:{port}"):
            assert http.get("/v1/models", headers={"host": host}).status_code == 200, host
        assert http.get("/v1/models", headers={"origin": f"http://localhost:{port}"}).status_code == 200
        refused = [
            http.post(exec_path, json={"commands": ["touch /tmp/pwned"]}, headers={"host": f"evil.example:{port}"}),
            http.post(exec_path, json={"commands": ["touch /tmp/pwned"]}, headers={"host": "127.0.0.1.evil.example"}),
            http.post(exec_path, json={"commands": ["touch /tmp/pwned"]}, headers={"origin": "http://evil.example"}),
            http.post(exec_path, json={"commands": ["touch /tmp/pwned"]}, headers={"origin": "null"}),
            http.post("/v1/containers", json={"name": "x"}, headers={"host": "rebind.example"}),
            http.get("/openapi.json", headers={"host": "rebind.example"}),
        ]
        for answer in refused:
            assert answer.status_code == 403, answer.text
            assert answer.json()["error"]["type"] == "invalid_request_error"
        listed = http.post(exec_path, json={"commands": ["ls /tmp/pwned"]}).json()["output"][0]
        assert listed["outcome"]["exit_code"] != 0  # none of the refused commands ran
        assert http.get("/docs").status_code == 200  # keyless: the docs are this machine's
    socket_url = keyless_server.url.replace("http://", "ws://") + "/v1/responses"
    with pytest.raises(InvalidStatus) as hijack:  # a page's WebSocket (cross-site WebSocket hijacking)
        connect(socket_url, origin=Origin("http://evil.example"))
    assert hijack.value.response.status_code == 403
    with connect(socket_url) as socket:  # this machine's own client needs no key
        socket.send(json.dumps({"type": "response.steer", "previous_response_id": "resp_x", "input": "hi"}))
        assert json.loads(socket.recv(timeout=10))["error"]["code"] == "response_not_found"
