"""A container's display through the API: ``/computer`` actions on real Chromium in a real desktop
container, ``/screenshot``, the ``/display`` WebSocket speaking RFB (with the key or a view token),
the noVNC view page, the audit trail, and the refusals (no display, bad actions, another project's
container, bad tokens, too many viewers).

The page is served inside the container (``tests/tools/test_computer.py``'s page and helpers): its
server's log says what the browser did.
"""

from __future__ import annotations

import base64
import re
import shutil
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.connection import Connection
from websockets.typing import Subprotocol

from cove.sandbox.linux.display import png_size
from cove.service.displays import MAX_VIEWERS
from tests.browser import browser
from tests.conftest import IMAGES_DIR, KEYS, Server, _server_env, data_dir
from tests.helpers import IdleWebSocket, run
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.scripted_upstream import ScriptedUpstream
from tests.tools.test_computer import BUTTON, CLICK, FIELD, OPEN_PAGE, desktop_container, page_log, wait_for

pytestmark = pytest.mark.root

SIZE = {"environment": "browser", "display_width": 1024, "display_height": 768}


@pytest.fixture(scope="module")
def desktop(http: httpx.Client) -> Iterator[str]:
    if not (IMAGES_DIR / "manifests" / "desktop.json").exists():
        pytest.fail(f"the desktop image is missing in {IMAGES_DIR}: run `make image`")
    container_id = desktop_container(http)
    yield container_id
    http.delete(f"/v1/containers/{container_id}")


@pytest.fixture(scope="module")
def plain(http: httpx.Client) -> Iterator[str]:
    created = http.post("/v1/containers", json={"name": "plain"})
    assert created.status_code == 200, created.text
    yield created.json()["id"]
    http.delete(f"/v1/containers/{created.json()['id']}")


def act(http: httpx.Client, container_id: str, actions: Any, **extra: Any) -> httpx.Response:
    return http.post(f"/v1/containers/{container_id}/computer", json={"actions": actions, **extra})


def screenshot_of(answer: httpx.Response) -> bytes:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "container.computer" and body["screenshot"]["type"] == "computer_screenshot"
    url = body["screenshot"]["image_url"]
    assert url.startswith("data:image/png;base64,"), url[:40]
    return base64.b64decode(url.split(",", 1)[1])


def error_of(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    return error


def test_actions_through_the_api_change_the_page_in_chromium(http: httpx.Client, desktop: str) -> None:
    opened = screenshot_of(act(http, desktop, OPEN_PAGE, **SIZE))
    assert png_size(opened) == (1024, 768)
    wait_for(http, desktop, "GET /loaded")
    page = http.get(f"/v1/containers/{desktop}/screenshot")
    assert page.status_code == 200 and page.headers["content-type"] == "image/png"
    assert png_size(page.content) == (1024, 768)
    clicked = screenshot_of(act(http, desktop, [CLICK]))
    wait_for(http, desktop, "GET /clicked")
    assert clicked != page.content  # the button turned the page green
    typed = screenshot_of(act(http, desktop, [{"type": "click", "x": FIELD[0], "y": FIELD[1], "button": "left"},
                                              {"type": "type", "text": "typed through the api"},
                                              {"type": "keypress", "keys": ["ENTER"]}]))
    assert png_size(typed) == (1024, 768)
    wait_for(http, desktop, "GET /submitted?text=typed+through+the+api")
    # A later request for another size gets the display that runs.
    later = screenshot_of(act(http, desktop, [{"type": "move", "x": 5, "y": 5}], display_width=640,
                              display_height=480))
    assert png_size(later) == (1024, 768)

    audit = http.get(f"/v1/containers/{desktop}/audit", params={"limit": 100}).json()
    batches = [event for event in audit["data"] if event["type"] == "computer"]
    assert len(batches) >= 4
    for event in batches:
        assert event["outcome"] == {"type": "completed", "message": None} and event["duration_ms"] > 0
        assert event["response_id"] is None
    actions = [action for event in batches for action in event["actions"]]
    assert {"type": "click", "x": BUTTON[0], "y": BUTTON[1], "button": "left"} in actions
    assert {"type": "type", "text": "typed through the api"} in actions  # typed text is kept, as commands are


def test_bad_actions_are_refused_naming_the_field(http: httpx.Client, desktop: str) -> None:
    cases: list[tuple[Any, str]] = [
        ([], "actions"),
        ([{"type": "wait"}] * 65, "actions"),
        ([{"type": "click", "x": "left", "y": 3, "button": "left"}], "actions[0].x"),
        ([{"type": "wait"}, {"type": "teleport"}], "actions[1].type"),
        ([{"type": "keypress"}], "actions[0].keys"),
        ([{"type": "click", "x": 5000, "y": 3, "button": "left"}], "actions[0]"),  # the display's own check
        ([{"type": "keypress", "keys": ["NOT_A_KEY"]}], "actions[0]"),
    ]
    for actions, param in cases:
        error = error_of(act(http, desktop, actions), 400)
        assert error["param"] == param and error["type"] == "invalid_request_error", (actions, error)
    assert error_of(act(http, desktop, [{"type": "wait"}], extra=1), 400)["code"] == "unknown_parameter"
    assert error_of(act(http, desktop, "click"), 400)["param"] == "actions"
    assert error_of(act(http, desktop, [{"type": "wait"}], environment="amiga"), 400)["param"] == "environment"
    # A refused batch is in the audit trail too, saying so.
    audit = http.get(f"/v1/containers/{desktop}/audit", params={"limit": 100}).json()
    refused = [e for e in audit["data"] if e["type"] == "computer" and e["outcome"]["type"] == "refused"]
    assert refused and "NOT_A_KEY" in str([e["actions"] for e in refused])


def test_a_fresh_display_starts_at_the_size_asked_and_checks_it(http: httpx.Client) -> None:
    created = http.post("/v1/containers", json={"name": "small", "image": "desktop", "memory_limit": "4g"})
    container_id = created.json()["id"]
    try:
        for width in (10, 0, 5000):
            error = error_of(act(http, container_id, [{"type": "wait"}], display_width=width), 400)
            assert error["param"] == "display_width", error
        small = screenshot_of(act(http, container_id, [{"type": "screenshot"}], environment="linux",
                                  display_width=640, display_height=480))
        assert png_size(small) == (640, 480)
    finally:
        http.delete(f"/v1/containers/{container_id}")


def test_a_container_without_a_display_is_refused(http: httpx.Client, server: Server, plain: str) -> None:
    assert error_of(act(http, plain, [{"type": "wait"}]), 400)["code"] == "no_display"
    assert error_of(http.get(f"/v1/containers/{plain}/screenshot"), 400)["code"] == "no_display"
    assert error_of(http.get(f"/v1/containers/{plain}/display/view"), 400)["code"] == "no_display"
    with pytest.raises(InvalidStatus) as refused:
        connect(socket_url(server, plain), additional_headers=key("alpha"), open_timeout=30)
    assert refused.value.response.status_code == 400


def test_another_projects_container_is_not_found(server: Server, desktop: str) -> None:
    with server.http("beta") as beta:
        for answer in (act(beta, desktop, [{"type": "wait"}]), beta.get(f"/v1/containers/{desktop}/screenshot"),
                       beta.get(f"/v1/containers/{desktop}/display/view"),
                       beta.post(f"/v1/containers/{desktop}/display/token")):
            assert error_of(answer, 404)["code"] == "container_not_found"
    with pytest.raises(InvalidStatus) as refused:
        connect(socket_url(server, desktop), additional_headers=key("beta"), open_timeout=30)
    assert refused.value.response.status_code == 404


# -- the live view ------------------------------------------------------------------------------------

def socket_url(server: Server, container_id: str, token: str | None = None) -> str:
    query = f"?token={token}" if token is not None else ""
    return f"ws://127.0.0.1:{server.port}/v1/containers/{container_id}/display{query}"


def key(project: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[project]}"}


class Rfb:
    """The client side of RFB's handshake, over the socket's binary frames (however x11vnc split them)."""

    def __init__(self, ws: Connection | IdleWebSocket) -> None:
        self.ws = ws
        self.buffer = b""

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            frame = self.ws.recv(timeout=30)
            assert isinstance(frame, bytes), frame
            self.buffer += frame
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def handshake(self) -> tuple[int, int, bytes]:
        """Version, security (None), client and server init: the framebuffer's size and the desktop's name."""
        version = self.read(12)
        assert re.fullmatch(rb"RFB 003\.00\d\n", version), version
        self.ws.send(b"RFB 003.008\n")
        types = self.read(self.read(1)[0])
        assert 1 in types, types  # None: the socket's own auth is the door
        self.ws.send(b"\x01")
        assert self.read(4) == b"\0\0\0\0"
        self.ws.send(b"\x01")  # shared: other viewers stay
        width, height = struct.unpack(">HH", self.read(4))
        self.read(16)  # pixel format
        name = self.read(struct.unpack(">I", self.read(4))[0])
        return width, height, name


def viewers(http: httpx.Client, container_id: str) -> int:
    out = run(http, container_id, "for f in /proc/[0-9]*/comm; do cat $f 2>/dev/null; done | grep -c '^x11vnc$'; true")
    return int(str(out[0]["stdout"]).strip())


def test_the_socket_speaks_rfb_to_several_viewers_and_closes_with_either_side(
        http: httpx.Client, server: Server, desktop: str) -> None:
    with connect(socket_url(server, desktop), additional_headers=key("alpha"),
                 subprotocols=[Subprotocol("binary")], open_timeout=60) as first:
        with connect(socket_url(server, desktop), additional_headers=key("alpha"), open_timeout=60) as second:
            assert first.subprotocol == "binary" and second.subprotocol is None
            assert Rfb(first).handshake()[:2] == (1024, 768)
            assert Rfb(second).handshake()[:2] == (1024, 768)
            assert viewers(http, desktop) == 2
        # The viewer's side closing ends its x11vnc; the other view goes on.
        eventually(lambda: viewers(http, desktop) == 1, what="the closed view's x11vnc to end")
        # The display's side ending (its x11vnc killed) ends the viewer's socket.
        run(http, desktop, "for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = x11vnc ] && "
                           "kill ${p#/proc/}; done; true")
        with pytest.raises(ConnectionClosed):
            while True:
                first.recv(timeout=30)
    audit = http.get(f"/v1/containers/{desktop}/audit", params={"limit": 100}).json()
    views = [e for e in audit["data"] if e["type"] == "display_view"]
    assert len(views) >= 2 and all(v["via"] == "api_key" and v["bytes_out"] > 0 for v in views), views


def test_a_viewer_that_stops_reading_is_dropped(http: httpx.Client, server: Server, desktop: str) -> None:
    """Full-screen updates asked for and never read: the relay waits instead of buffering, then lets
    the viewer go (its x11vnc ends, its view is audited)."""
    eventually(lambda: viewers(http, desktop) == 0, what="earlier views to end")
    idle = IdleWebSocket(socket_url(server, desktop), key("alpha"))
    try:
        Rfb(idle).handshake()
        full_screen = b"\x03\x00" + struct.pack(">HHHH", 0, 0, 1024, 768)  # FramebufferUpdateRequest
        for _ in range(10):  # ~3 MB each (raw pixels): more than the socket buffers hold
            idle.send(full_screen)
        assert viewers(http, desktop) == 1
        eventually(lambda: viewers(http, desktop) == 0, timeout=60, what="the stalled viewer's x11vnc to end")
        assert idle.close_code() == 1008  # said so, behind the frames it never read
    finally:
        idle.sock.close()
    audit = http.get(f"/v1/containers/{desktop}/audit", params={"limit": 5}).json()
    assert any(e["type"] == "display_view" and e["bytes_out"] > 0 for e in audit["data"])


def test_viewers_are_capped_per_container(http: httpx.Client, server: Server, desktop: str) -> None:
    sockets = [connect(socket_url(server, desktop), additional_headers=key("alpha"), open_timeout=60)
               for _ in range(MAX_VIEWERS)]
    try:
        with pytest.raises(InvalidStatus) as refused:
            connect(socket_url(server, desktop), additional_headers=key("alpha"), open_timeout=60)
        assert refused.value.response.status_code == 429
        assert b"too_many_viewers" in refused.value.response.body
    finally:
        for ws in sockets:
            ws.close()
    # Closed views free their places.
    eventually(lambda: _opens(server, desktop), what="a view to open again after the others closed")


def _opens(server: Server, container_id: str) -> bool:
    try:
        with connect(socket_url(server, container_id), additional_headers=key("alpha"), open_timeout=60) as ws:
            return Rfb(ws).handshake()[0] == 1024
    except InvalidStatus:
        return False


def test_a_view_token_opens_the_socket_and_a_bad_one_does_not(http: httpx.Client, server: Server, desktop: str,
                                                               plain: str) -> None:
    minted = http.post(f"/v1/containers/{desktop}/display/token")
    assert minted.status_code == 200, minted.text
    token = minted.json()["token"]
    assert minted.json()["object"] == "container.display_token"
    assert KEYS["alpha"] not in minted.text
    with connect(socket_url(server, desktop, token), open_timeout=60) as ws:  # no key: the token is the door
        assert Rfb(ws).handshake()[:2] == (1024, 768)
    payload, signature = token.split(".")
    tampered = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    foreign = http.post(f"/v1/containers/{desktop}/display/token").json()["token"]
    for bad, container_id in ((tampered, desktop), (token + "x", desktop), ("", desktop), ("a.b", desktop),
                              (foreign, plain)):
        with pytest.raises(InvalidStatus) as refused:
            connect(socket_url(server, container_id, bad), open_timeout=30)
        assert refused.value.response.status_code == 401, bad
        assert b"invalid_display_token" in refused.value.response.body
    audit = http.get(f"/v1/containers/{desktop}/audit", params={"limit": 100}).json()
    assert any(e["type"] == "display_view" and e["via"] == "token" for e in audit["data"])


def test_the_view_page_serves_novnc_with_a_token(http: httpx.Client, server: Server, desktop: str) -> None:
    page = http.get(f"/v1/containers/{desktop}/display/view")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert 'from "/novnc/core/rfb.js"' in page.text and KEYS["alpha"] not in page.text
    token = re.search(r"display\?token=([A-Za-z0-9_.-]+)", page.text)
    assert token is not None, page.text
    script = httpx.get(f"{server.url}/novnc/core/rfb.js")  # the browser loads noVNC without a key
    assert script.status_code == 200 and "export default class RFB" in script.text
    assert script.headers["content-type"].startswith("text/javascript")  # browsers run modules of JS types only
    # The embedded token opens the socket, and opens the page itself (a link for a browser).
    with connect(socket_url(server, desktop, token.group(1)), open_timeout=60) as ws:
        assert Rfb(ws).handshake()[:2] == (1024, 768)
    assert httpx.get(f"{server.url}/v1/containers/{desktop}/display/view",
                     params={"token": token.group(1)}).status_code == 200
    assert error_of(httpx.get(f"{server.url}/v1/containers/{desktop}/display/view"), 401)["code"] == \
        "missing_api_key"


def test_a_person_watches_and_takes_over_in_a_real_browser(http: httpx.Client, server: Server,
                                                          desktop: str) -> None:
    """The view page in headless Chromium: noVNC connects over the token's socket, draws the
    container's 1024x768 screen, and a click on the drawn button reaches the page in the container."""
    screenshot_of(act(http, desktop, OPEN_PAGE, **SIZE))
    wait_for(http, desktop, "GET /loaded")
    clicks = page_log(http, desktop).count("GET /clicked")
    link = http.post(f"/v1/containers/{desktop}/display/token")
    assert link.status_code == 200, link.text
    with browser() as page:
        page.goto(server.url + link.json()["view_url"])
        eventually(lambda: page.evaluate("document.getElementById('status').textContent") == "live",
                   what="noVNC connected", timeout=60)
        canvas = eventually(lambda: page.evaluate(
            "(() => { const c = document.querySelector('#screen canvas'); if (!c || c.width < 2) return null;"
            " const r = c.getBoundingClientRect();"
            " return {width: c.width, height: c.height, left: r.left, top: r.top, shown: r.width}; })()"),
            what="the drawn screen")
        assert (canvas["width"], canvas["height"]) == (1024, 768)
        scale = canvas["shown"] / canvas["width"]  # scaleViewport fits the screen to the window
        page.click(canvas["left"] + BUTTON[0] * scale, canvas["top"] + BUTTON[1] * scale)
        eventually(lambda: page_log(http, desktop).count("GET /clicked") > clicks,
                   what="the person's click in the container's page")


def test_the_view_page_says_when_novnc_is_missing(upstream: ScriptedUpstream,
                                                  postgres: PostgresServer | None) -> None:
    srv = Server(data_dir("cove-novnc"), {**_server_env(upstream, postgres), "COVE_NOVNC_DIR": "/nonexistent/novnc"})
    srv.start()
    try:
        with srv.http() as http:
            created = http.post("/v1/containers", json={"name": "plain"}).json()
            error = error_of(http.get(f"/v1/containers/{created['id']}/display/view"), 404)
            assert error["code"] == "novnc_missing" and "/nonexistent/novnc" in error["message"], error
    finally:
        srv.stop()
        shutil.rmtree(srv.data_dir, ignore_errors=True)


def test_a_page_opened_by_a_token_embeds_that_token(http: httpx.Client, server: Server, desktop: str) -> None:
    token = http.post(f"/v1/containers/{desktop}/display/token").json()["token"]
    page = httpx.get(f"{server.url}/v1/containers/{desktop}/display/view", params={"token": token})
    assert page.status_code == 200, page.text
    embedded = re.findall(r"display\?token=([A-Za-z0-9_.-]+)", page.text)
    assert embedded == [token]  # not a fresh one: reloading the link never outlives its token
    assert "rfb.viewOnly = false;" in page.text
    watching = http.get(f"/v1/containers/{desktop}/display/view", params={"view_only": "true"})
    assert "rfb.viewOnly = true;" in watching.text
    assert re.findall(r"display\?token=([A-Za-z0-9_.-]+)", watching.text) != [token]  # with the key: a fresh one
    assert error_of(httpx.get(f"{server.url}/v1/containers/{desktop}/display/view",
                              params={"token": token + "x"}), 401)["code"] == "invalid_display_token"
    # noVNC's modules are served without a key (the page's imports load), nothing else of its directory.
    assert httpx.get(f"{server.url}/novnc/vendor/pako/lib/zlib/inflate.js").status_code == 200
    assert httpx.get(f"{server.url}/novnc/vnc.html").status_code == 404



def test_deleting_the_container_ends_its_views(http: httpx.Client, server: Server) -> None:
    container_id = desktop_container(http)
    with connect(socket_url(server, container_id), additional_headers=key("alpha"), open_timeout=60) as ws:
        assert Rfb(ws).handshake()[:2] == (1024, 768)
        deleted = http.delete(f"/v1/containers/{container_id}")
        assert deleted.status_code == 200, deleted.text
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=30)
    with pytest.raises(InvalidStatus) as refused:
        connect(socket_url(server, container_id), additional_headers=key("alpha"), open_timeout=30)
    assert refused.value.response.status_code == 404



def test_a_viewer_sending_garbage_ends_only_its_own_view(http: httpx.Client, server: Server, desktop: str) -> None:
    with connect(socket_url(server, desktop), additional_headers=key("alpha"), open_timeout=60) as good, \
            connect(socket_url(server, desktop), additional_headers=key("alpha"), open_timeout=60,
                    max_size=None) as hostile:
        rfb = Rfb(good)
        assert rfb.handshake()[:2] == (1024, 768)
        hostile.send(b"NOT RFB AT ALL\n" + bytes(4 << 20))  # a bad version and 4 MiB of zeros
        with pytest.raises(ConnectionClosed):
            while True:
                hostile.recv(timeout=30)
        # The other view goes on: a full framebuffer update request is answered.
        good.send(struct.pack(">BBHHHH", 3, 0, 0, 0, 1024, 768))
        assert rfb.read(1) == b"\0"  # FramebufferUpdate
    assert http.get(f"/v1/containers/{desktop}/screenshot").status_code == 200
