"""A real desktop container: the display agent, Xvfb, openbox and Chromium, driven through
``LinuxSandbox.display`` like the API and the computer tool drive it.

One container serves the module (a Chromium start is the slow part); a page served inside it, by
``python3 -m http.server`` on the container's loopback, records what the browser did in the
server's log, read back through the container's files.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cove.config import Settings
from cove.egress.policy import EgressPolicy
from cove.errors import DisplayError, InvalidRequest
from cove.sandbox.base import Command, Limits, Screen
from cove.sandbox.images.store import ImageStore
from cove.sandbox.linux import display as display_module
from cove.sandbox.linux.container import LinuxSandbox
from cove.sandbox.linux.display import LinuxDisplay, png_size
from cove.sandbox.linux.engine import LinuxEngine
from tests.conftest import IMAGES_DIR, data_dir
from tests.desktop_page import BUTTON, FIELD, LOG, PAD, PAGE, SLIDER_Y
from tests.internet import Internet
from tests.polling import eventually_async

pytestmark = pytest.mark.root

T = TypeVar("T")


@dataclass
class Desktop:
    engine: LinuxEngine
    sandbox: LinuxSandbox
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    async def sh(self, command: str) -> str:
        out = await self.sandbox.exec(Command(command, 30_000, 100_000))
        assert out.outcome.type == "exit" and out.outcome.exit_code == 0, out
        return out.stdout

    async def log(self) -> str:
        files = await self.sandbox.files()
        return (await files.read(LOG, 1 << 20)).data.decode()


def start_engine(name: str, **settings_: Any) -> LinuxEngine:
    data = data_dir(name)
    settings = Settings(data_dir=data, images_dir=IMAGES_DIR, warm_pool=0, disk_limit="2g", **settings_)
    return LinuxEngine(settings, ImageStore(settings.image_root, settings.subuid_base))


@pytest.fixture(scope="module")
def desktop() -> Iterator[Desktop]:
    if not (IMAGES_DIR / "manifests" / "desktop.json").exists():
        pytest.fail(f"the desktop image is missing in {IMAGES_DIR}: run `make image`")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    engine = start_engine("cove-desktop")

    async def start() -> LinuxSandbox:
        await engine.start()
        sandbox = await engine.create("cntr_desktop", "desktop", Limits(memory="4g", cpus=2))
        files = await sandbox.files()
        await files.write("/srv/page/index.html", [PAGE.encode()])
        await sandbox.exec(Command(f"cd /srv/page && setsid python3 -m http.server 8000 --bind 127.0.0.1 "
                                   f">{LOG} 2>&1 </dev/null &", 10_000, 1000))
        return sandbox

    sandbox = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=120)
    yield Desktop(engine, sandbox, loop)

    async def stop() -> None:
        await engine.destroy("cntr_desktop")
        await engine.close()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=120)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
    shutil.rmtree(engine.settings.data_dir, ignore_errors=True)


def is_png_of(data: bytes, screen: Screen) -> bool:
    return png_size(data) == (screen.width, screen.height)


async def open_page(d: Desktop) -> bytes:
    """Navigates through the address bar, as a model would, and waits for the page to load."""
    display = await d.sandbox.display()
    before = len((await d.log()).splitlines())
    # The address bar is focused first, settled, as a model would see it before typing; DELETE drops
    # what the omnibox inlined from history (the form's earlier submissions).
    await display.act([{"type": "keypress", "keys": ["CTRL", "L"]}])
    shot = await display.act([{"type": "type", "text": "http://127.0.0.1:8000/"},
                              {"type": "keypress", "keys": ["DELETE"]},
                              {"type": "keypress", "keys": ["ENTER"]}])

    async def loaded() -> bool:
        return "GET /loaded" in "".join((await d.log()).splitlines(keepends=True)[before:])

    await eventually_async(loaded, what="the page to load in Chromium")
    return shot


def test_clicking_and_typing_change_the_page_in_real_chromium(desktop: Desktop) -> None:
    async def body() -> None:
        display = await desktop.sandbox.display(Screen(1024, 768, "browser"))
        first = await display.screenshot()
        assert is_png_of(first, display.screen)
        await open_page(desktop)
        page = await display.screenshot()
        clicked = await display.act([{"type": "click", "x": BUTTON[0], "y": BUTTON[1], "button": "left"}])
        assert is_png_of(clicked, display.screen) and clicked != page
        await eventually_async(lambda: _has(desktop, "GET /clicked"), what="the button's fetch")
        await display.act([{"type": "click", "x": FIELD[0], "y": FIELD[1]},
                           {"type": "type", "text": "hello computer 42"},
                           {"type": "keypress", "keys": ["ENTER"]}])
        await eventually_async(lambda: _has(desktop, "GET /submitted?text=hello+computer+42"),
                               what="the form's submission with the typed text")

    desktop.run(body())


async def _has(d: Desktop, text: str) -> bool:
    return text in await d.log()


def test_a_command_in_the_container_reaches_the_same_screen(desktop: Desktop) -> None:
    async def body() -> None:
        await desktop.sandbox.display()
        assert (await desktop.sh("echo $DISPLAY")).strip() == ":1"
        before = len((await desktop.log()).splitlines())
        await desktop.sh("chromium http://127.0.0.1:8000/?from=command >/dev/null 2>&1 &")

        async def opened() -> bool:
            return "GET /?from=command" in "".join((await desktop.log()).splitlines(keepends=True)[before:])

        await eventually_async(opened, what="the page a command opened in the display's Chromium")
        windows = await desktop.sh("xdotool search --onlyvisible --class chromium")
        assert windows.split(), "no Chromium window on the display"

    desktop.run(body())


def test_keypress_names_are_mapped_to_the_keys_a_page_sees(desktop: Desktop) -> None:
    async def body() -> None:
        display = await desktop.sandbox.display()
        await open_page(desktop)
        # In the field: select-all and delete (CTRL+A, BACKSPACE), arrows and modifiers by OpenAI's names.
        await display.act([{"type": "click", "x": FIELD[0], "y": FIELD[1]},
                           {"type": "type", "text": "abc"},
                           {"type": "keypress", "keys": ["ctrl", "a"]},
                           {"type": "keypress", "keys": ["BACKSPACE"]},
                           {"type": "type", "text": "xz"},
                           {"type": "keypress", "keys": ["ARROWLEFT"]},
                           {"type": "type", "text": "y"},
                           {"type": "keypress", "keys": ["END"]},
                           {"type": "keypress", "keys": ["SHIFT", "1"]},
                           {"type": "keypress", "keys": ["Enter"]}])
        await eventually_async(lambda: _has(desktop, "GET /submitted?text=xyz%21"),
                               what="the field to hold xyz! after the key presses")

    desktop.run(body())


@pytest.mark.parametrize(("action", "why"), [
    ({"type": "teleport"}, "unknown action type"),
    ({"type": "click", "x": 5000, "y": 10}, "off the"),
    ({"type": "click", "x": "ten", "y": 10}, "x must be a number"),
    ({"type": "click", "x": 10, "y": 10, "button": "thumb"}, "button must be"),
    ({"type": "keypress", "keys": ["CTRL", "NOSUCHKEY"]}, "unknown key 'NOSUCHKEY'"),
    ({"type": "keypress", "keys": []}, "keys must be"),
    ({"type": "drag", "path": [{"x": 1, "y": 1}]}, "path must be"),
    ({"type": "type"}, "text is required"),
    ("click", "must be an object"),
])
def test_actions_that_do_not_fit_are_refused_naming_them(desktop: Desktop, action: Any, why: str) -> None:
    display = desktop.run(desktop.sandbox.display())
    with pytest.raises(InvalidRequest) as caught:
        desktop.run(display.act([{"type": "move", "x": 1, "y": 1}, action]))
    assert caught.value.param == "actions[1]" and why in caught.value.message
    with pytest.raises(InvalidRequest) as empty:
        desktop.run(display.act([]))
    assert empty.value.param == "actions"


def test_every_mouse_button_double_clicks_and_drags_reach_the_page(desktop: Desktop) -> None:
    async def body() -> None:
        display = await desktop.sandbox.display()
        await open_page(desktop)
        x, y = PAD
        await display.act([{"type": "click", "x": x, "y": y, "button": b}
                           for b in ("left", "right", "wheel", "forward")])
        await display.act([{"type": "double_click", "x": x, "y": y}])
        await display.act([{"type": "drag", "path": [{"x": 8, "y": SLIDER_Y}, {"x": 200, "y": SLIDER_Y},
                                                     {"x": 398, "y": SLIDER_Y}]}])
        await display.act([{"type": "click", "x": x, "y": y, "button": "back"}])  # last: it may navigate back

        async def seen() -> bool:
            log = await desktop.log()
            return all(f"GET {path} " in log for path in (
                "/down?0", "/down?2", "/down?1", "/down?4", "/double", "/range?100", "/down?3"))

        await eventually_async(seen, what="each button, the double click and the drag to reach the page")

    desktop.run(body())


def test_scroll_moves_the_page_by_about_the_pixels_asked(desktop: Desktop) -> None:
    async def body() -> None:
        display = await desktop.sandbox.display()
        await open_page(desktop)
        await display.act([{"type": "scroll", "x": 500, "y": 400, "scroll_x": 240, "scroll_y": 480}])
        await eventually_async(lambda: _has(desktop, "GET /scrolled?240,480"), what="the page to scroll to (240, 480)")

    desktop.run(body())


def test_the_other_actions_run(desktop: Desktop) -> None:
    async def body() -> None:
        display = await desktop.sandbox.display()
        await open_page(desktop)
        shots = [await display.act([action]) for action in (
            {"type": "move", "x": 500, "y": 500},
            {"type": "double_click", "x": 600, "y": 600},
            {"type": "click", "x": 600, "y": 600, "button": "right"},
            {"type": "keypress", "keys": ["ESC"]},
            {"type": "scroll", "x": 500, "y": 400, "scroll_x": 0, "scroll_y": 300},
            {"type": "drag", "path": [{"x": 10, "y": 300}, {"x": 100, "y": 320}, {"x": 200, "y": 340}]},
            {"type": "wait"},
            {"type": "screenshot"},
        )]
        assert all(is_png_of(shot, display.screen) for shot in shots)

    desktop.run(body())


def test_a_killed_agent_is_started_again_on_next_use(desktop: Desktop) -> None:
    async def body() -> None:
        display = await desktop.sandbox.display()
        await display.screenshot()
        servers = await desktop.sh("pgrep -x Xvfb")
        await desktop.sh("pkill -KILL -f display-agent")

        async def works() -> bytes:
            return await display.screenshot()

        # The kill may be seen first as a broken reply (one DisplayError), then the agent restarts.
        shot = await eventually_async(works, what="the display to come back", ignoring=(DisplayError,))
        assert is_png_of(shot, display.screen)
        again = await desktop.sh("pgrep -x Xvfb")
        assert len(again.split()) == 1 and again != servers, "the old X server outlived its agent"

    desktop.run(body())


def test_vnc_speaks_rfb_at_the_screen_size(desktop: Desktop) -> None:
    async def body() -> None:
        display = await desktop.sandbox.display()
        channel = await display.vnc()
        received = b""

        async def read(n: int) -> bytes:
            nonlocal received
            while len(received) < n:
                chunk = await asyncio.wait_for(channel.read(), 10)
                assert chunk, "the VNC server closed the connection"
                received += chunk
            head, received = received[:n], received[n:]
            return head

        try:
            assert await read(12) == b"RFB 003.008\n"
            await channel.write(b"RFB 003.008\n")
            count = (await read(1))[0]
            assert 1 in await read(count)  # security type None: the API key guards the stream
            await channel.write(b"\x01")
            assert await read(4) == b"\0\0\0\0"
            await channel.write(b"\x01")  # ClientInit, shared
            init = await read(4)
            assert (int.from_bytes(init[:2], "big"), int.from_bytes(init[2:], "big")) == (1024, 768)
        finally:
            await channel.close()
        await eventually_async(lambda: _no_process(desktop, "x11vnc"), what="x11vnc to end with its channel")

    desktop.run(body())


async def _browser_ended(d: Desktop) -> bool:
    """No Chromium process left but zombies (the agent reaps its browser on its next request)."""
    out = await d.sandbox.exec(Command("ps -C chromium -o stat=", 10_000, 1000))
    return all(state.startswith("Z") for state in out.stdout.split())


async def _no_process(d: Desktop, name: str) -> bool:
    out = await d.sandbox.exec(Command(f"pgrep -x {name}", 10_000, 1000))
    return not out.stdout.strip()


FAKE_AGENT = """
import os, sys, time
mode = os.path.basename(sys.argv[0])[5:-3]
out = os.fdopen(1, "wb")
if mode == "silent":
    time.sleep(600)
if mode == "exits":
    sys.exit(3)
out.write(b'{"ready": ":9"}\\n'); out.flush()
sys.stdin.buffer.readline()
if mode == "dies":
    sys.exit(0)
replies = {"endless": b"x" * 200000, "huge": b'{"size": 999999999}\\n', "garbage": b'{"size": 4}\\nnope',
           "slow": b"", "dies": b""}
if mode == "slow":
    time.sleep(600)
out.write(replies[mode]); out.flush()
time.sleep(600)
"""


@pytest.mark.parametrize(("mode", "why"), [
    ("silent", "did not start: no answer"), ("endless", "unreadable reply"), ("huge", "size out of bounds"),
    ("garbage", "not a PNG"), ("slow", "no answer within"), ("dies", "unreadable reply"),
    ("exits", "did not start: an unreadable reply (IncompleteReadError); it exited with status 3")])
def test_a_hostile_agent_is_bounded_and_ended(desktop: Desktop, mode: str, why: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent is code in the container, which the container can subvert: whatever it says (or
    does not say), the host waits a bounded time, reads a bounded reply, and ends it."""
    monkeypatch.setattr(display_module, "START_TIMEOUT_S", 1.0)
    monkeypatch.setattr(display_module, "REPLY_TIMEOUT_S", 1.0)

    async def body() -> None:
        path = f"/srv/fake-{mode}.py"
        await (await desktop.sandbox.files()).write(path, [FAKE_AGENT.encode()])
        fake = LinuxDisplay(Screen(), path, desktop.sandbox.connect)
        with pytest.raises(DisplayError) as caught:
            await fake.screenshot()
        assert why in caught.value.message and caught.value.status_code == 502
        await eventually_async(lambda: _no_process_matching(desktop, f"fake-{mode}"),
                               what="the fake agent to be ended")

    desktop.run(body())


async def _no_process_matching(d: Desktop, pattern: str) -> bool:
    out = await d.sandbox.exec(Command(f"pgrep -f {pattern} | grep -v $$", 10_000, 1000))
    return not out.stdout.strip()


def test_a_closed_browser_opens_again_on_the_next_action(desktop: Desktop) -> None:
    async def body() -> None:
        display = await desktop.sandbox.display()
        await display.act([{"type": "keypress", "keys": ["CTRL", "SHIFT", "W"]}])  # closes the window
        await eventually_async(lambda: _browser_ended(desktop), what="Chromium to exit")
        empty = await display.screenshot()
        back = await display.act([{"type": "move", "x": 1, "y": 1}])
        assert back != empty
        await open_page(desktop)

    desktop.run(body())


def test_concurrent_callers_take_turns(desktop: Desktop) -> None:
    async def body() -> None:
        display = await desktop.sandbox.display()
        shots = await asyncio.gather(*(display.act([{"type": "move", "x": 10 * i, "y": 10 * i}])
                                       for i in range(1, 9)), display.screenshot())
        assert all(is_png_of(shot, display.screen) for shot in shots)

    desktop.run(body())


def test_a_container_without_a_display_refuses(desktop: Desktop) -> None:
    async def body() -> None:
        plain = await desktop.engine.create("cntr_plain", "default", Limits())
        try:
            with pytest.raises(InvalidRequest) as caught:
                await plain.display()
            assert caught.value.code == "no_display"
        finally:
            await desktop.engine.destroy("cntr_plain")

    desktop.run(body())


def test_a_bad_screen_is_refused(desktop: Desktop) -> None:
    for screen, param in ((Screen(10, 768), "display_width"), (Screen(1024, 100_000), "display_height"),
                          (Screen(1024, 768, "amiga"), "environment")):
        with pytest.raises(InvalidRequest) as caught:
            desktop.run(desktop.sandbox.display(screen))
        assert caught.value.param == param


def _cgroup_pids(container_id: str) -> set[int]:
    procs = Path("/sys/fs/cgroup/pids/cove") / container_id / "cgroup.procs"
    return {int(line) for line in procs.read_text().split()} if procs.exists() else set()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_stop_and_destroy_leave_no_processes() -> None:
    """On a container of its own: stop ends the display's processes, the next use starts them again
    (at the new size), and destroy ends everything."""
    engine = start_engine("cove-desktop-stop")

    async def body() -> None:
        await engine.start()
        try:
            sandbox = await engine.create("cntr_desktop_stop", "desktop", Limits())
            display = await sandbox.display(Screen(800, 600, "linux"))
            assert is_png_of(await display.act([{"type": "move", "x": 5, "y": 5}]), Screen(800, 600))
            pids = _cgroup_pids(sandbox.id)
            assert len(pids) >= 3  # init, agent, Xvfb, openbox
            await sandbox.stop()
            await eventually_async(lambda: not any(_alive(pid) for pid in pids), what="the display's processes to end")
            again = await sandbox.display(Screen(640, 480, "linux"))
            assert again is display  # one display per container: a handle kept from before the stop stays valid
            assert is_png_of(await display.screenshot(), Screen(640, 480))
            pids = _cgroup_pids(sandbox.id)
            await engine.destroy("cntr_desktop_stop")
            await eventually_async(lambda: not any(_alive(pid) for pid in pids), what="every process to end")
        finally:
            await engine.close()

    asyncio.run(body())
    shutil.rmtree(engine.settings.data_dir, ignore_errors=True)



def test_the_browser_goes_through_the_containers_egress_policy(internet: Internet) -> None:
    """Chromium's traffic takes the container's egress proxy: an allowed domain is reached, another
    is refused before it leaves, and the container's own loopback stays direct."""
    engine = start_engine("cove-desktop-egress", egress_test_hosts=internet.test_hosts, egress_ca_file=internet.ca)

    async def visit(display: Any, url: str) -> None:
        await display.act([{"type": "keypress", "keys": ["CTRL", "L"]}])
        await display.act([{"type": "type", "text": url}, {"type": "keypress", "keys": ["DELETE"]},
                           {"type": "keypress", "keys": ["ENTER"]}])

    def reached(marker: str) -> bool:
        return any(marker in request["path"] for request in internet.requests())

    async def body() -> None:
        await engine.start()
        try:
            sandbox = await engine.create("cntr_desktop_egress", "desktop",
                                          Limits(network=EgressPolicy(("api.cove.test",))))
            display = await sandbox.display()
            await visit(display, "http://blocked.cove.test/echo?from=chromium-blocked")
            await visit(display, "http://api.cove.test/echo?from=chromium-allowed")
            await eventually_async(lambda: reached("from=chromium-allowed"), what="the allowed site to be reached")
            assert not reached("from=chromium-blocked")
            files = await sandbox.files()
            await files.write("/srv/page/index.html", [PAGE.encode()])
            await sandbox.exec(Command(f"cd /srv/page && setsid python3 -m http.server 8000 --bind 127.0.0.1 "
                                       f">{LOG} 2>&1 </dev/null &", 10_000, 1000))
            await visit(display, "http://127.0.0.1:8000/")

            async def loaded() -> bool:
                return "GET /loaded" in (await files.read(LOG, 1 << 20)).data.decode()

            await eventually_async(loaded, what="the container's own page, past the proxy")
        finally:
            await engine.destroy("cntr_desktop_egress")
            await engine.close()

    asyncio.run(body())
    shutil.rmtree(engine.settings.data_dir, ignore_errors=True)
