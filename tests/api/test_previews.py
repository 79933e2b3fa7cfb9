"""Preview URLs through the API: ``/v1/containers/{id}/ports/{port}/...`` proxies HTTP and WebSocket to
apps in a real container (``python3 -m http.server``, a header-echoing app, a stdlib WebSocket echo
server, a server with smuggled framing), with the key or a signed expiring URL; what crosses is
filtered both ways, and the port is always the container's own, never the host's."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.sync.connection import Connection

from cove.service.previews import MAX_CONNECTIONS
from tests.conftest import KEYS, Server
from tests.helpers import run
from tests.polling import eventually

pytestmark = pytest.mark.root

APP = r'''
import base64, hashlib, http.server, json, socket, socketserver, struct, sys, threading

class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/go"):
            self.send_response(302); self.send_header("Location", "/landed")
            self.send_header("Content-Length", "0"); self.end_headers(); return
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        body = json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "session=stolen; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body[::-1])

    def websocket(self):
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"]
                 + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        for k, v in (("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)):
            self.send_header(k, v)
        self.end_headers(); self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            if head[0] & 0x0F == 8:  # a close: answered, and the connection ends, as the protocol asks
                self.wfile.write(b"\x88\x00"); self.wfile.flush()
                self.close_connection = True
                return
            n = head[1] & 0x7F
            if n == 126: n = struct.unpack(">H", self.rfile.read(2))[0]
            mask = self.rfile.read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            reply = b"echo:" + data
            self.wfile.write(bytes([0x81, len(reply)]) + reply); self.wfile.flush()

    def log_message(self, *args):
        pass

class Smuggler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.recv(65536)
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 30\r\n\r\nhello"
                             b"HTTP/1.1 200 OK\r\nX-Injected: yes\r\n\r\n")

socketserver.ThreadingTCPServer.allow_reuse_address = True
threading.Thread(target=socketserver.ThreadingTCPServer(("127.0.0.1", 8002), Smuggler).serve_forever,
                 daemon=True).start()
http.server.ThreadingHTTPServer(("127.0.0.1", 8001), Echo).serve_forever()
'''


@pytest.fixture(scope="module")
def box(http: httpx.Client) -> Iterator[str]:
    created = http.post("/v1/containers", json={"name": "previews"})
    assert created.status_code == 200, created.text
    container_id = created.json()["id"]
    run(http, container_id, "mkdir -p /srv/site/sub && echo hello-static > /srv/site/sub/page.txt && "
                            "echo '<a href=\"sub/page.txt\">page</a>' > /srv/site/index.html")
    run(http, container_id, f"cat > /srv/app.py <<'EOF'\n{APP}EOF")
    run(http, container_id, "cd /srv/site && setsid python3 -m http.server 8000 --bind 127.0.0.1 "
                            ">/dev/null 2>&1 < /dev/null & setsid python3 /srv/app.py >/srv/app.log 2>&1 </dev/null &")
    base = f"/v1/containers/{container_id}/ports"
    eventually(lambda: http.get(f"{base}/8000/").status_code == 200 and http.get(f"{base}/8001/x").status_code == 200,
               what="the apps in the container to listen")
    yield container_id
    http.delete(f"/v1/containers/{container_id}")


def echoed(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_http_server_previewed_with_the_key(http: httpx.Client, box: str) -> None:
    index = http.get(f"/v1/containers/{box}/ports/8000/")
    assert index.status_code == 200 and 'href="sub/page.txt"' in index.text
    assert http.get(f"/v1/containers/{box}/ports/8000/sub/page.txt").text == "hello-static\n"
    assert http.get(f"/v1/containers/{box}/ports/8000/missing").status_code == 404  # the app's own 404
    posted = http.post(f"/v1/containers/{box}/ports/8001/anything", content=b"abc123")
    assert posted.status_code == 200 and posted.content == b"321cba"


def test_the_app_never_sees_the_key_or_cookies_and_cannot_set_any(http: httpx.Client, box: str) -> None:
    answer = http.get(f"/v1/containers/{box}/ports/8001/p?q=1", headers={"Cookie": "console=secret",
                                                                          "X-Forwarded-For": "1.2.3.4"})
    seen = echoed(answer)
    headers = {key.lower(): value for key, value in seen["headers"].items()}
    assert seen["path"] == "/p?q=1"
    assert "authorization" not in headers and "cookie" not in headers, headers
    assert KEYS["alpha"] not in json.dumps(seen)
    assert headers["host"] == "127.0.0.1:8001" and headers["x-forwarded-prefix"] == f"/v1/containers/{box}/ports/8001"
    assert headers.get("x-forwarded-for") is None
    assert "set-cookie" not in answer.headers
    assert answer.headers["content-security-policy"].startswith("sandbox ")
    assert "allow-same-origin" not in answer.headers["content-security-policy"]
    assert answer.headers["referrer-policy"] == "no-referrer"
    moved = http.get(f"/v1/containers/{box}/ports/8001/go")
    assert moved.status_code == 302 and moved.headers["location"] == f"/v1/containers/{box}/ports/8001/landed"


def test_a_signed_url_opens_the_port_and_its_relative_links(http: httpx.Client, server: Server, box: str) -> None:
    made = http.post(f"/v1/containers/{box}/ports/8000/url", json={"expires_in": 600})
    assert made.status_code == 200, made.text
    body = made.json()
    assert body["object"] == "container.preview_url" and body["url"].endswith("/")
    with httpx.Client(base_url=server.url) as browser:  # no key
        page = browser.get(body["url"])
        assert page.status_code == 200 and 'href="sub/page.txt"' in page.text
        assert browser.get(body["url"] + "sub/page.txt").text == "hello-static\n"
        bare = browser.get(body["url"].rstrip("/"))
        assert bare.status_code == 307 and bare.headers["location"] == body["url"]
        token = body["url"].split("/~")[1].rstrip("/")
        other_port = browser.get(f"/v1/containers/{box}/ports/8001/~{token}/")
        assert other_port.status_code == 401 and other_port.json()["error"]["code"] == "invalid_preview_token"
        assert browser.get(f"/v1/containers/{box}/ports/8000/").status_code == 401  # no key, no token
        assert browser.get(body["url"][:-4] + "AAA/").status_code == 401


def test_an_expired_url_is_refused(http: httpx.Client, server: Server, box: str) -> None:
    url = http.post(f"/v1/containers/{box}/ports/8000/url", json={"expires_in": 1}).json()["url"]
    with httpx.Client(base_url=server.url) as browser:
        eventually(lambda: browser.get(url).status_code == 401, timeout=10, what="the URL to expire")


def test_websockets_are_proxied_with_a_token(http: httpx.Client, server: Server, box: str) -> None:
    url = http.post(f"/v1/containers/{box}/ports/8001/url").json()["url"]
    with connect(server.url.replace("http://", "ws://") + url + "socket", open_timeout=30) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo:hi"
        ws.send("again")
        assert ws.recv(timeout=10) == "echo:again"


def test_refusals(http: httpx.Client, server: Server, box: str) -> None:
    beta = {"Authorization": f"Bearer {KEYS['beta']}"}
    assert httpx.get(f"{server.url}/v1/containers/{box}/ports/8000/", headers=beta).status_code == 404
    assert httpx.post(f"{server.url}/v1/containers/{box}/ports/8000/url", headers=beta).status_code == 404
    for port in (0, 65536, 99999):
        answer = http.post(f"/v1/containers/{box}/ports/{port}/url")
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "port", answer.text
        assert http.get(f"/v1/containers/{box}/ports/{port}/").status_code == 400
    assert http.post(f"/v1/containers/{box}/ports/8000/url", json={"expires_in": 0}).status_code == 400
    nothing = http.get(f"/v1/containers/{box}/ports/8999/")
    assert nothing.status_code == 502 and nothing.json()["error"]["code"] == "port_unreachable"
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{server.url.replace('http://', 'ws://')}/v1/containers/{box}/ports/8999/", open_timeout=30,
                additional_headers={"Authorization": f"Bearer {KEYS['alpha']}"}).close()
    assert refused.value.response.status_code == 502


def test_the_port_is_the_containers_never_the_hosts(http: httpx.Client, box: str) -> None:
    with socket.socket() as host_listener:  # a server on the host's loopback
        host_listener.bind(("127.0.0.1", 0))
        host_listener.listen()
        port = host_listener.getsockname()[1]
        answer = http.get(f"/v1/containers/{box}/ports/{port}/")
        assert answer.status_code == 502 and answer.json()["error"]["code"] == "port_unreachable"
        host_listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            host_listener.accept()  # nothing ever connected to it


def test_smuggled_framing_from_the_app_is_a_502(http: httpx.Client, box: str) -> None:
    answer = http.get(f"/v1/containers/{box}/ports/8002/")
    assert answer.status_code == 502, answer.text
    assert "x-injected" not in answer.headers


def test_a_prefix_spelled_otherwise_still_reaches_the_same_path(http: httpx.Client, box: str) -> None:
    assert echoed(http.get(f"/v1/containers/{box}/ports/08001/a/b"))["path"] == "/a/b"
    assert echoed(http.get(f"/v1/containers/{box}/p%6Frts/8001/a%20b"))["path"] == "/a%20b"


def test_preview_connections_per_container_are_capped(http: httpx.Client, server: Server, box: str) -> None:
    url = server.url.replace("http://", "ws://") + http.post(f"/v1/containers/{box}/ports/8001/url").json()["url"]
    sockets: list[Connection] = []

    def all_open() -> bool:
        """Connections of earlier tests end a moment after their clients left: until then some are refused."""
        try:
            while len(sockets) < MAX_CONNECTIONS:
                sockets.append(connect(url + "socket", open_timeout=30))
        except InvalidStatus as refused:
            assert refused.response.status_code == 429
            return False
        return True

    try:
        eventually(all_open, what=f"{MAX_CONNECTIONS} preview connections", ignoring=(AssertionError,))
        for ws in sockets[:3]:
            ws.send("still")
            assert ws.recv(timeout=10) == "echo:still"
        refused = http.get(f"/v1/containers/{box}/ports/8000/")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_preview_connections"
    finally:
        for ws in sockets:
            ws.close()
    eventually(lambda: http.get(f"/v1/containers/{box}/ports/8000/").status_code == 200,
               what="the connections to be released")


def test_previews_are_audited(http: httpx.Client, server: Server, box: str) -> None:
    """Each request and WebSocket session that reached the container: port, method, the app's path
    without the query, status, bytes each way, key or token; never the token or the query."""
    url = http.post(f"/v1/containers/{box}/ports/8001/url").json()["url"]
    token = url.split("/~")[1].rstrip("/")
    with httpx.Client(base_url=server.url) as browser:
        assert browser.get(url + "audited-get?secret-query=1").status_code == 200
    assert http.post(f"/v1/containers/{box}/ports/8001/audited-post", content=b"abc123").content == b"321cba"
    with connect(server.url.replace("http://", "ws://") + url + "audited-socket", open_timeout=30) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo:hi"
    assert http.get(f"/v1/containers/{box}/ports/8009/audited-nothing").status_code == 502

    def audited() -> dict[str, dict[str, Any]]:
        events = http.get(f"/v1/containers/{box}/audit", params={"limit": 100}).json()["data"]
        found = {e["path"]: e for e in events if e["type"] == "preview" and e["path"].startswith("/audited")}
        assert len(found) == 4, found
        return found

    found = eventually(audited, what="four preview events", ignoring=(AssertionError,))
    get, post = found["/audited-get"], found["/audited-post"]
    assert (get["port"], get["method"], get["status"], get["via"], get["websocket"]) == (
        8001, "GET", 200, "token", False)
    assert get["bytes_in"] == 0 and get["bytes_out"] > 0
    assert (post["method"], post["status"], post["via"], post["bytes_in"], post["bytes_out"]) == (
        "POST", 200, "api_key", 6, 6)
    socket_event = found["/audited-socket"]
    assert (socket_event["websocket"], socket_event["status"], socket_event["via"]) == (True, 101, "token")
    assert (socket_event["bytes_in"], socket_event["bytes_out"]) == (2, len("echo:hi"))
    assert (found["/audited-nothing"]["port"], found["/audited-nothing"]["status"]) == (8009, 502)
    trail = json.dumps(list(found.values()))
    assert token not in trail and "secret-query" not in trail
