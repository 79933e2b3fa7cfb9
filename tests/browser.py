"""A real browser for tests of Cove's pages: the host's headless Chromium, driven over the DevTools
protocol (CDP) on loopback.

Chromium talks to the world on its own (component updates, safe browsing, name look-ups); here every
name but 127.0.0.1 resolves to nothing and every non-loopback request goes to a proxy on a closed
loopback port, so a test's browser reaches only the server under test.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.polling import eventually

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-domain-reliability", "--disable-breakpad",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         "--proxy-server=http://127.0.0.1:9", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "--window-size=1024,768"]


class Page:
    """One tab: navigate, evaluate JavaScript, dispatch mouse input."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # events arrive in between; the answer carries the call's id
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


@contextmanager
def browser() -> Iterator[Page]:
    """A fresh headless Chromium (own profile) with one tab; ended when the block ends."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: `make test` installs it (TEST_APT_PACKAGES)")
    profile = tempfile.mkdtemp(prefix="cove-browser-")
    process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        port = _devtools_port(process.stderr)
        targets = eventually(lambda: [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                                      if t.get("type") == "page"], what="a page target")
        with connect(targets[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            yield Page(ws)
    finally:
        process.kill()
        process.communicate()  # reaps it and closes its stderr (read to the end by now)
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_port(stderr: Any) -> int:
    """The port Chromium chose, from the line it prints once DevTools listens."""
    for line in stderr:
        found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        if found:  # the rest is read away, so that a chatty browser never blocks on a full pipe
            threading.Thread(target=stderr.readlines, daemon=True).start()
            return int(found.group(1))
    raise AssertionError("chromium ended before DevTools listened")
