"""The live view page in a real browser: headless Chromium on the host (Debian's ``chromium``, installed
by ``make setup``) opens the link a view token gives, noVNC connects over the ``/display`` WebSocket,
and a click in the page reaches the page served inside the desktop container (a person taking
over). Also: a page opened with a token never hands out a longer-lived one.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from cove.api.display_socket import STALL_SECONDS
from tests.api.test_display import SIZE, Rfb, act, error_of, key, screenshot_of, socket_url, viewers
from tests.conftest import IMAGES_DIR, Server
from tests.polling import eventually
from tests.tools.test_computer import BUTTON, OPEN_PAGE, desktop_container, wait_for

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def desktop(http: httpx.Client) -> Iterator[str]:
    if not (IMAGES_DIR / "manifests" / "desktop.json").exists():
        pytest.fail(f"the desktop image is missing in {IMAGES_DIR}: run `make image`")
    container_id = desktop_container(http)
    screenshot_of(act(http, container_id, OPEN_PAGE, **SIZE))
    wait_for(http, container_id, "GET /loaded")
    yield container_id
    http.delete(f"/v1/containers/{container_id}")


class Browser:
    """Headless Chromium driven over the DevTools protocol (its own WebSocket): navigate, evaluate,
    and real mouse input, which reaches the page's handlers as a person's would."""

    def __init__(self, profile: Path) -> None:
        chromium = shutil.which("chromium")
        if chromium is None:
            pytest.fail("no chromium on the host: run `make setup` (Debian's chromium package)")
        self.process = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1024,768", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = profile / "DevToolsActivePort"  # Chromium writes the port it took here
        eventually(lambda: active.exists() and len(active.read_text().split()) >= 2, timeout=60,
                   what="Chromium's DevTools port")
        port = active.read_text().split()[0]
        target = eventually(lambda: next((page for page in httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                                          if page["type"] == "page"), None), what="Chromium's first tab")
        self.devtools = connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.calls = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        self.devtools.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:  # no domain is enabled, so only answers come
            message = json.loads(self.devtools.recv(timeout=60))
            if message.get("id") == self.calls:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def click(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def close(self) -> None:
        self.devtools.close()
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with tempfile.TemporaryDirectory(prefix="cove-chromium-") as profile:
        browser = Browser(Path(profile))
        try:
            yield browser
        finally:
            browser.close()


def test_a_browser_watches_and_takes_over_through_the_view_page(http: httpx.Client, server: Server, desktop: str,
                                                               browser: Browser) -> None:
    minted = http.post(f"/v1/containers/{desktop}/display/token")
    assert minted.status_code == 200, minted.text
    browser.call("Page.navigate", url=server.url + minted.json()["view_url"])  # the link a person is given
    eventually(lambda: browser.evaluate("document.getElementById('status')?.textContent") == "live",
               timeout=60, what="noVNC to connect")
    # The canvas shows the display at its size, scaled into the window.
    rect = eventually(lambda: browser.evaluate(
        "(() => { const c = document.querySelector('#screen canvas'); if (!c || !c.width) return null;"
        " const r = c.getBoundingClientRect();"
        " return {left: r.left, top: r.top, scale: r.width / c.width, width: c.width, height: c.height}; })()"),
        timeout=60, what="noVNC's canvas")
    assert (rect["width"], rect["height"]) == (1024, 768), rect
    # Taking over: a click on the button's place in the view clicks the button in the container.
    browser.click(rect["left"] + BUTTON[0] * rect["scale"], rect["top"] + BUTTON[1] * rect["scale"])
    wait_for(http, desktop, "GET /clicked")
    browser.call("Page.navigate", url="about:blank")  # the view closes with the page

    def view_audited() -> list[dict[str, Any]]:
        audit = http.get(f"/v1/containers/{desktop}/audit", params={"limit": 100}).json()
        return [e for e in audit["data"] if e["type"] == "display_view" and e["via"] == "token"]
    views = eventually(view_audited, what="the closed view in the audit trail")
    assert views[0]["bytes_in"] > 0 and views[0]["bytes_out"] > 0, views  # the person's input went in


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


def test_a_viewer_that_stops_reading_is_dropped(http: httpx.Client, server: Server, desktop: str) -> None:
    """A viewer that asks for frames and reads none holds its x11vnc only for a bounded time: it is
    dropped by the server's WebSocket keepalive (a ping every 20 s, 20 s to answer) or, once the
    sockets between are full (on loopback they take tens of MB first), by ``STALL_SECONDS`` of a
    frame waiting; whichever comes first."""
    before = viewers(http, desktop)
    update = struct.pack(">BBHHHH", 3, 0, 0, 0, 1024, 768)  # a full update, raw: 3 MiB

    with connect(socket_url(server, desktop), additional_headers=key("alpha"), open_timeout=60,
                 max_queue=1, max_size=None, ping_interval=None) as ws:  # no keepalive: it is not reading

        def dropped() -> bool:
            with contextlib.suppress(ConnectionClosed):  # asks for more all along, reads none of it
                ws.send(update)
            return viewers(http, desktop) == before

        assert Rfb(ws).handshake()[:2] == (1024, 768)
        assert viewers(http, desktop) == before + 1
        eventually(dropped, timeout=STALL_SECONDS + 40, interval=0.5, what="the stalled view's x11vnc to end")
    audit = http.get(f"/v1/containers/{desktop}/audit", params={"limit": 20}).json()
    view = next(e for e in audit["data"] if e["type"] == "display_view")
    assert view["bytes_out"] > 0 and view["duration_ms"] <= (STALL_SECONDS + 40) * 1000, view
