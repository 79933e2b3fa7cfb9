"""The display agent: runs INSIDE a desktop container, with the image's own python3.

The host places it in every container (read-only, under ``/.cove``) and starts it through cove-init
with one end of a socketpair as stdin and stdout, when a container's display is first used. It starts
Xvfb at the requested size (its framebuffer in a file, read here by mmap: a screenshot costs a PNG
encode, not an X round trip), openbox, and for ``browser`` Chromium maximized, then answers requests,
one at a time:

    host -> agent   one JSON line: {"op": "act", "steps": [...], "settle": bool} or {"op": "screenshot"}
                    (a step is {"xdotool": [args]} or {"sleep": seconds}, compiled and checked by the host)
    agent -> host   one JSON line: {"size": N} followed by N bytes of PNG, or {"error": "..."}

and once at start {"ready": ":1"} or {"error": "..."}. Everything here is the container's and so
untrusted by the host, which bounds each reply in size and time. It needs python3 with PIL (imported
when it starts, so a missing one is reported) and the X programs of the desktop image; it is written
for Python 3.8+ like the code interpreter's kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import io
import json
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import time
from typing import Any

_PR_SET_PDEATHSIG = 1
STATE_DIR = "/tmp/.cove-display"
"""Xvfb's framebuffer file and the X programs' logs (emptied on every start)."""
POLL_S = 0.005
"""How often a settling screenshot looks at the framebuffer."""
QUIET_S = 0.04
"""How long the screen must stay unchanged after a change to count as settled. Chromium repaints
13-23 ms after an input event; 40 ms of quiet covered every click of the lab's 30 (none stale)."""
NO_CHANGE_S = 0.15
"""An action that changes nothing within this long is done (a click on a blank spot)."""
SETTLE_MAX_S = 1.0
"""A screen that never stops changing (an animation) is taken as it is after this long."""
BROWSER_START_S = 15.0
BROWSER_TOP_ROWS = 32
BROWSER_QUIET_S = 0.2
"""Chromium paints its window in steps (frame, tab strip, page): ready after this long without a change."""
BROWSER_FLAGS = (
    # The container is Chromium's sandbox: its seccomp profile refuses new user namespaces and
    # no_new_privs rules out a setuid helper, so Chromium's own sandbox cannot start in it.
    "--no-sandbox", "--test-type",  # (test-type: no infobar warning about --no-sandbox)
    "--start-maximized", "--no-first-run", "--no-default-browser-check", "--hide-crash-restore-bubble",
    "--password-store=basic", "--disable-dev-shm-usage", "--noerrdialogs", "--mute-audio",
    # Memory: no GPU process (software compositing in the browser), renderers shared per site,
    # none of the background services a kiosk-like browser never uses.
    "--disable-gpu", "--in-process-gpu", "--disable-software-rasterizer", "--no-zygote",
    "--disable-site-isolation-trials", "--process-per-site", "--renderer-process-limit=2",
    "--disable-extensions", "--disable-component-update", "--disable-background-networking",
    "--disable-sync", "--disable-default-apps", "--disable-breakpad", "--disable-domain-reliability",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication,"
    "CalculateNativeWinOcclusion,InterestFeedContentSuggestions,SpareRendererForSitePerProcess,"
    "PreloadTopChromeWebUI,WebUIOmniboxPopup,WebUIOmniboxFullPopup,WebUIOmniboxAimPopup",
    "--enable-features=NetworkServiceInProcess2",
)


class Framebuffer:
    """Xvfb's screen 0 as it writes it to ``-fbdir``: an XWD file whose pixels are BGRX."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
        # XWDFileHeader: 25 big-endian CARD32s; the pixels follow the header and the colormap.
        fields = struct.unpack_from(">25I", self._map, 0)
        header_size, width, height, bits_per_pixel, bytes_per_line, ncolors = (
            fields[0], fields[4], fields[5], fields[11], fields[12], fields[19])
        if bits_per_pixel != 32:
            raise RuntimeError(f"unexpected framebuffer depth: {bits_per_pixel} bits per pixel")
        self.width, self.height, self.stride = width, height, bytes_per_line
        self._start = header_size + ncolors * 12
        self._end = self._start + bytes_per_line * height

    def pixels(self) -> bytes:
        return self._map[self._start:self._end]

    def rows(self, count: int) -> bytes:
        """The top ``count`` rows only (cheaper to poll than the whole screen)."""
        return self._map[self._start:self._start + self.stride * count]

    def png(self, pixels: bytes | None = None) -> bytes:
        image_module: Any = importlib.import_module("PIL.Image")
        raw = self.pixels() if pixels is None else pixels
        image = image_module.frombuffer("RGB", (self.width, self.height), raw, "raw", "BGRX", self.stride, 1)
        out = io.BytesIO()
        image.save(out, "PNG", compress_level=1)
        return out.getvalue()

    def settle(self, before: bytes, started: float, quiet: float = QUIET_S, patience: float = NO_CHANGE_S,
               bound: float = SETTLE_MAX_S) -> bytes:
        """The pixels once the screen stopped changing: a change (from ``before``, the screen as it
        was before the actions) and then ``quiet`` seconds without one, or ``patience`` seconds
        without any, or ``bound`` in all."""
        last, changed_at = before, 0.0
        while True:
            now = time.monotonic()
            current = self.pixels()
            if current != last:
                last, changed_at = current, now
            if changed_at and now - changed_at >= quiet:
                return last
            if not changed_at and now - started >= patience:
                return last
            if now - started >= bound:
                return last
            time.sleep(POLL_S)


class Desktop:
    def __init__(self, width: int, height: int, environment: str) -> None:
        self.width, self.height, self.environment = width, height, environment
        self.display = os.environ.get("DISPLAY", ":1")
        self.children: list[subprocess.Popen[bytes]] = []
        self.fb: Framebuffer | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.browser: subprocess.Popen[bytes] | None = None

    def _log(self, name: str) -> Any:
        return open(os.path.join(STATE_DIR, f"{name}.log"), "wb")

    def _spawn(self, argv: list[str], name: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._log(name) as log:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     preexec_fn=_die_with_parent, **kwargs)
        self.children.append(child)
        return child

    def start(self) -> None:
        importlib.import_module("PIL.Image")  # fail now, saying so, rather than at the first screenshot
        os.makedirs(STATE_DIR, exist_ok=True)
        for name in os.listdir(STATE_DIR):
            os.unlink(os.path.join(STATE_DIR, name))
        self._start_x()
        self._spawn(["openbox"], "openbox")
        if self.environment == "browser":
            self._start_browser()

    def _start_x(self) -> None:
        _end_stale_server(self.display)
        ready_r, ready_w = os.pipe()
        argv = ["Xvfb", self.display, "-screen", "0", f"{self.width}x{self.height}x24", "-fbdir", STATE_DIR,
                "-displayfd", str(ready_w), "-nolisten", "tcp", "-noreset", "-dpi", "96"]
        self.server = server = self._spawn(argv, "xvfb", pass_fds=(ready_w,))
        os.close(ready_w)
        # Xvfb writes the number, then a newline in a second write: closing the pipe before that
        # second write kills it (a fatal "Cannot write display number"), so read up to the newline.
        number, deadline = b"", time.monotonic() + 10
        try:
            while not number.endswith(b"\n") and len(number) < 64:
                readable, _, _ = select.select([ready_r], [], [], max(0.0, deadline - time.monotonic()))
                chunk = os.read(ready_r, 64) if readable else b""
                if not chunk:
                    break
                number += chunk
        finally:
            os.close(ready_r)
        if not number.endswith(b"\n"):
            server.poll()
            with open(os.path.join(STATE_DIR, "xvfb.log"), errors="replace") as log:
                tail = log.read()[-500:]
            raise RuntimeError(f"Xvfb did not start on {self.display}: {tail.strip()}")
        self.fb = Framebuffer(os.path.join(STATE_DIR, "Xvfb_screen0"))

    def _start_browser(self) -> None:
        assert self.fb is not None
        flags = list(BROWSER_FLAGS)
        proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("HTTP_PROXY")
        if proxy:  # the container's egress proxy, for every scheme; loopback stays direct
            flags.append(f"--proxy-server={proxy}")
        blank = self.fb.pixels()
        self.browser = self._spawn(["chromium", *flags, "about:blank"], "chromium")
        # Ready once Chromium has painted its tab strip (the top rows: the pointer, which a window
        # manager may redraw meanwhile, starts mid-screen) and the screen has then been still for
        # a while. Bounded: a browser that never shows still leaves a usable desktop.
        top = blank[:self.fb.stride * BROWSER_TOP_ROWS]
        deadline = time.monotonic() + BROWSER_START_S
        while self.fb.rows(BROWSER_TOP_ROWS) == top:
            if time.monotonic() > deadline:
                return
            time.sleep(POLL_S)
        self.fb.settle(blank, time.monotonic(), quiet=BROWSER_QUIET_S, bound=BROWSER_START_S)

    def act(self, steps: list[dict[str, Any]], settle: bool) -> bytes:
        assert self.fb is not None and self.server is not None
        if self.server.poll() is not None:
            raise ServerGone(f"the X server ended (status {self.server.returncode})")
        if self.browser is not None and self.browser.poll() is not None:
            self.children.remove(self.browser)
            self._start_browser()  # closed (its last window) or crashed: a browser display has one
        before = self.fb.pixels()
        for step in steps:
            if "sleep" in step:
                time.sleep(float(step["sleep"]))
            else:
                done = subprocess.run(["xdotool", *step["xdotool"]], stdin=subprocess.DEVNULL,
                                      capture_output=True, timeout=30, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"xdotool failed: {done.stderr.decode(errors='replace').strip()[:300]}")
        return self.fb.png(self.fb.settle(before, time.monotonic()) if settle else None)

    def stop(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(OSError):
                child.kill()


class ServerGone(RuntimeError):
    """Xvfb ended: this agent is done; the host starts a new one on the next use."""


def _die_with_parent() -> None:
    """In a child before exec: SIGKILL when the agent dies, however it dies (the host ends the agent's
    whole session, but a process in the container may kill the agent alone)."""
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _end_stale_server(display: str) -> None:
    """Kills an X server still holding ``display`` (one a command started, or a killed agent's): the
    display is the agent's, and Xvfb would refuse to start beside it."""
    lock = f"/tmp/.X{display.lstrip(':').split('.')[0]}-lock"
    try:
        with open(lock) as handle:
            pid = int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return
    if pid <= 1 or pid == os.getpid():
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        if not os.path.exists(f"/proc/{pid}") or _zombie(pid):
            break
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        os.unlink(lock)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _reply(out: Any, header: dict[str, Any], payload: bytes = b"") -> None:
    out.write((json.dumps(header) + "\n").encode() + payload)
    out.flush()


def main() -> None:
    width, height, environment = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    out = os.fdopen(1, "wb")
    desktop = Desktop(width, height, environment)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        try:
            desktop.start()
        except Exception as exc:
            _reply(out, {"error": f"the display did not start: {exc}"})
            return
        _reply(out, {"ready": desktop.display})
        for line in os.fdopen(0, "rb"):
            try:
                request = json.loads(line)
                if request["op"] == "screenshot":
                    png = desktop.act([], settle=False)
                else:
                    png = desktop.act(request["steps"], settle=bool(request["settle"]))
            except ServerGone as exc:
                _reply(out, {"error": str(exc)})
                return
            except Exception as exc:
                _reply(out, {"error": str(exc)[:1000]})
                continue
            _reply(out, {"size": len(png)}, png)
    finally:
        desktop.stop()


if __name__ == "__main__":
    main()
