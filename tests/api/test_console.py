"""The web console (``/console``) in a real browser: Debian's Chromium driven by Playwright, locked to
loopback as ``tests/browser.py`` locks it (every name but 127.0.0.1 resolves to nothing, everything
else goes to a dead proxy). A person signs in, reads the lists and a trajectory (followed live while
it runs), uploads and downloads a file; the refusals (another project's objects, forms without the
session's CSRF token or from another origin) are checked over plain HTTP.

A screenshot of each page is kept in the test's tmp dir (``console-screens``), printed at the end.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.browser import FLAGS
from tests.conftest import KEYS, Server, data_dir, running_server
from tests.helpers import run
from tests.polling import eventually
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

CHROMIUM = "/usr/bin/chromium"
LOCKDOWN = [flag for flag in FLAGS if not flag.startswith("--remote-debugging")]
SHELL: Any = {"type": "shell", "environment": {"type": "container_auto"}}
HOSTILE = '<script>document.title="owned"</script><img src=x onerror=alert(1)>'


def shell(*commands: str, delay: float = 0.0) -> Reply:
    return Reply(tool_calls=[ToolCall(name="shell", arguments=json.dumps({"commands": list(commands)}))], delay=delay)


@pytest.fixture(autouse=True)
def fresh_script(upstream: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    upstream.reset()
    yield upstream
    upstream.reset()


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("console-screens")
    yield directory
    print(f"\nconsole screenshots: {directory}: {sorted(p.name for p in directory.iterdir())}")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LOCKDOWN, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    yield context.new_page()
    context.close()


def sign_in(page: Page, server: Server, project: str = "alpha") -> None:
    page.goto(f"{server.url}/console/")
    expect(page).to_have_url(f"{server.url}/console/login")
    page.fill("#key", KEYS[project])
    page.click("#login button[type=submit]")
    expect(page).to_have_url(f"{server.url}/console/responses")


def test_sign_in_keeps_the_key_on_the_server(page: Page, server: Server, screens: Path) -> None:
    page.goto(f"{server.url}/console/")
    expect(page.locator("#login")).to_be_visible()
    page.screenshot(path=screens / "login.png", full_page=True)
    page.fill("#key", "not-a-key")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("not an API key")
    sign_in(page, server)
    cookies = page.context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"], c["path"]) for c in cookies] == [
        ("cove_console", True, "Strict", "/console")]
    assert KEYS["alpha"] not in cookies[0]["value"]
    assert KEYS["alpha"] not in page.content()
    assert KEYS["alpha"] not in page.url
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts never see the session
    page.click("header button[type=submit]")  # sign out: the session ends on the server
    expect(page).to_have_url(f"{server.url}/console/login")
    stale = httpx.get(f"{server.url}/console/responses", cookies={"cove_console": cookies[0]["value"]})
    assert stale.status_code == 303 and stale.headers["location"] == "/console/login"


def test_a_trajectory_shows_commands_outputs_durations_and_tokens(
        page: Page, server: Server, client: openai.OpenAI, upstream: ScriptedUpstream, screens: Path) -> None:
    upstream.script([shell(f"echo '{HOSTILE}'", "echo second >&2"), Reply(text=f"done {HOSTILE}")])
    response = client.responses.create(model="scripted-model", input=f"run it {HOSTILE}", tools=[SHELL])
    assert response.status == "completed"
    sign_in(page, server)
    row = page.locator("#responses a", has_text=response.id)
    expect(row).to_be_visible()
    page.screenshot(path=screens / "responses.png", full_page=True)
    row.click()
    expect(page).to_have_url(f"{server.url}/console/responses/{response.id}")
    items = page.locator("#items > li")
    expect(items).to_have_count(3)
    assert [items.nth(i).get_attribute("data-type") for i in range(3)] == [
        "shell_call", "shell_call_output", "message"]
    commands = items.nth(0).locator(".command")
    expect(commands.nth(0)).to_contain_text(f"$ echo '{HOSTILE}'")
    expect(commands.nth(0).locator(".duration")).to_have_text(re.compile(r"^[0-9.]+ ms$"))
    expect(commands.nth(1).locator(".duration")).to_have_text(re.compile(r"^[0-9.]+ ms$"))
    expect(items.nth(1).locator(".stdout")).to_have_text(HOSTILE + "\n")
    expect(items.nth(1).locator(".stderr")).to_have_text("second\n")
    expect(items.nth(2)).to_contain_text(f"done {HOSTILE}")
    expect(page.locator("#input")).to_contain_text(f"run it {HOSTILE}")
    usage = response.usage
    assert usage is not None
    expect(page.locator("#tokens")).to_have_text(
        f"{usage.input_tokens} in · {usage.output_tokens} out · {usage.total_tokens} total")
    expect(page.locator("#summary a", has_text=str(response.model_extra["container_id"]))).to_be_visible()
    # The model's markup is text: no element of it exists, no script of it ran.
    assert page.locator("main script, main img[src=x]").count() == 0
    assert page.title() == f"{response.id} · Cove console"
    page.screenshot(path=screens / "trajectory.png", full_page=True)


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of one colour."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_computer_use_screenshots_are_shown_inline(
        page: Page, server: Server, http: httpx.Client, upstream: ScriptedUpstream, screens: Path) -> None:
    tool = {"type": "computer_use_preview", "display_width": 64, "display_height": 48, "environment": "browser"}
    click = {"type": "click", "x": 3, "y": 4, "button": "left"}
    upstream.script([Reply(tool_calls=[ToolCall("computer", json.dumps(click))])])
    first = http.post("/v1/responses", json={"model": "scripted-model", "input": "look", "tools": [tool]}).json()
    call = first["output"][-1]
    assert call["type"] == "computer_call", first
    upstream.script([Reply(text="I see a green screen")])
    shot = "data:image/png;base64," + base64.b64encode(png(64, 48, (40, 160, 60))).decode()
    second = http.post("/v1/responses", json={
        "model": "scripted-model", "previous_response_id": first["id"], "tools": [tool],
        "input": [{"type": "computer_call_output", "call_id": call["call_id"],
                   "output": {"type": "computer_screenshot", "image_url": shot}}]}).json()
    assert second["status"] == "completed", second
    sign_in(page, server)
    page.goto(f"{server.url}/console/responses/{first['id']}")
    expect(page.locator("#items [data-type=computer_call]")).to_contain_text('"x": 3')
    page.goto(f"{server.url}/console/responses/{second['id']}")
    image = page.locator("#input [data-type=computer_call_output] img.screenshot")
    expect(image).to_be_visible()
    assert image.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]") == [True, 64, 48]
    expect(page.locator("#summary a", has_text=first["id"])).to_be_visible()  # the previous response
    page.screenshot(path=screens / "computer-use.png", full_page=True)


@pytest.mark.parametrize("background", [True, False], ids=["background", "foreground"])
def test_a_running_response_is_followed_live(page: Page, server: Server, client: openai.OpenAI,
                                             upstream: ScriptedUpstream, screens: Path, background: bool) -> None:
    # A slow model is the scenario: each turn takes a second, so the page opens while it runs.
    upstream.script([shell("echo live-output", delay=1.0), Reply(text="finished live", delay=1.0)])
    with contextlib.ExitStack() as stack:
        if background:
            response_id = client.responses.create(model="scripted-model", input="go", tools=[SHELL],
                                                  background=True).id
        else:  # a client streams it in the foreground; the run goes on whether it reads or not
            stream = stack.enter_context(client.responses.create(model="scripted-model", input="go", tools=[SHELL],
                                                                 stream=True))
            response_id = next(event for event in stream if event.type == "response.created").response.id
        sign_in(page, server)
        page.goto(f"{server.url}/console/responses/{response_id}")
        expect(page.locator("#live")).to_be_visible()  # opened before it ended
        expect(page.locator("#items > li")).to_have_count(3, timeout=60_000)
        expect(page.locator("#items")).to_contain_text("live-output")
        expect(page.locator("#items .command .duration")).to_have_text(re.compile(r"^[0-9.]+ ms$"))  # shown again
        expect(page.locator("#items")).to_contain_text("finished live")
        expect(page.locator("#status")).to_have_text("completed")
        expect(page.locator("#live")).to_have_count(0)
    page.screenshot(path=screens / f"live-{'background' if background else 'foreground'}.png", full_page=True)
    page.reload()  # what was followed is what is stored
    expect(page.locator("#items > li")).to_have_count(3)


def test_a_container_page_uploads_and_downloads_files_and_shows_its_audit(
        page: Page, server: Server, http: httpx.Client, screens: Path, tmp_path: Path) -> None:
    created = http.post("/v1/containers", json={"name": f"console {HOSTILE}"})
    assert created.status_code == 200, created.text
    container_id = created.json()["id"]
    try:
        commands = [f"echo audited {i}" for i in range(55)]
        assert http.post(f"/v1/containers/{container_id}/exec", json={"commands": commands}).status_code == 200
        sign_in(page, server)
        page.goto(f"{server.url}/console/containers")
        page.screenshot(path=screens / "containers.png", full_page=True)
        page.locator("#containers a", has_text=container_id).click()
        expect(page.locator("h1")).to_contain_text(container_id)
        expect(page.locator("main")).to_contain_text(f"console {HOSTILE}")
        audit = page.locator("#audit tbody tr:not(#more)")
        expect(audit).to_have_count(50)  # newest first, a page at a time: htmx's "More" brings the rest
        expect(audit.first).to_contain_text("echo audited 54")
        page.click("#audit #more a")
        expect(audit).to_have_count(55)
        expect(audit.last).to_contain_text("echo audited 0")
        expect(page.locator("#audit #more")).to_have_count(0)
        upload = tmp_path / "notes <b>.txt"
        upload.write_bytes(b"uploaded through the console\n")
        page.set_input_files("#upload-file", str(upload))
        page.click("#upload button[type=submit]")
        link = page.locator("#files a", has_text="/mnt/data/notes <b>.txt")
        expect(link).to_be_visible()
        inside = http.post(f"/v1/containers/{container_id}/exec", json={"commands": ["cat '/mnt/data/notes <b>.txt'"]})
        assert inside.json()["output"][0]["stdout"] == "uploaded through the console\n"
        with page.expect_download() as downloading:
            link.click()
        download = downloading.value
        assert download.suggested_filename == "notes _b_.txt"  # Chromium's safe name for "notes <b>.txt"
        assert Path(download.path()).read_bytes() == b"uploaded through the console\n"
        page.screenshot(path=screens / "container.png", full_page=True)
    finally:
        http.delete(f"/v1/containers/{container_id}")


def test_lists_show_a_project_only(page: Page, server: Server, http: httpx.Client, screens: Path) -> None:
    said = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"hello {HOSTILE}"}]}
    conversation = http.post("/v1/conversations", json={"metadata": {"topic": HOSTILE}, "items": [said]}).json()
    response = http.post("/v1/responses", json={"model": "scripted-model", "input": "alpha's"}).json()
    container = http.post("/v1/containers", json={"name": "alpha's"}).json()
    with server.http("beta") as beta:
        own = beta.post("/v1/conversations", json={"metadata": {"owner": "beta"}}).json()
    try:
        sign_in(page, server)
        page.goto(f"{server.url}/console/conversations")
        expect(page.locator("#conversations")).to_contain_text(f"topic={HOSTILE}")
        page.screenshot(path=screens / "conversations.png", full_page=True)
        page.locator("#conversations a", has_text=conversation["id"]).click()
        expect(page.locator("h1")).to_contain_text(conversation["id"])
        expect(page.locator("#items > li")).to_have_text(f"user\nhello {HOSTILE}")
        page.screenshot(path=screens / "conversation.png", full_page=True)
        # beta sees its own objects and none of alpha's, in lists or by id
        page.context.clear_cookies()
        sign_in(page, server, "beta")
        alphas = [conversation["id"], response["id"], container["id"]]
        for kind in ("responses", "conversations", "containers"):
            page.goto(f"{server.url}/console/{kind}")
            assert not [found for found in alphas if found in page.content()], kind
            if kind == "conversations":
                expect(page.locator("#conversations")).to_contain_text(own["id"])
        for path in (f"conversations/{conversation['id']}", f"responses/{response['id']}",
                     f"responses/{response['id']}/live", f"containers/{container['id']}",
                     f"containers/{container['id']}/audit"):
            answer = page.goto(f"{server.url}/console/{path}")
            assert answer is not None and answer.status == 404, path
            expect(page.locator("#error-message")).to_contain_text(re.compile("not found|No container found"))
        page.screenshot(path=screens / "not-found.png", full_page=True)
    finally:
        http.delete(f"/v1/containers/{container['id']}")


def sign_in_plain(web: httpx.Client, server: Server) -> str:
    """Signs a plain HTTP client in as alpha; returns its CSRF token."""
    answer = web.post("/console/login", data={"key": KEYS["alpha"]}, headers={"Origin": server.url})
    assert answer.status_code == 303, answer.text
    page = web.get("/console/containers")
    csrf = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert csrf is not None
    return csrf.group(1)


def test_forms_need_the_sessions_token_and_the_consoles_origin(server: Server, http: httpx.Client) -> None:
    container_id = http.post("/v1/containers", json={"name": "csrf"}).json()["id"]
    try:
        with httpx.Client(base_url=server.url, timeout=60) as web:
            csrf = sign_in_plain(web, server)
            files = {"file": ("x.txt", b"x")}
            path = f"/console/containers/{container_id}/files"
            own = {"Origin": server.url}
            assert web.post(path, files=files, data={"csrf": "wrong"}, headers=own).status_code == 403
            assert web.post(path, files=files, headers=own).status_code == 403
            assert web.post(path, files=files, data={"csrf": csrf},
                            headers={"Origin": "http://evil.example"}).status_code == 403
            assert web.post(path, files=files, data={"csrf": csrf}).status_code == 403  # no origin at all
            assert web.post(path, files=files, data={"csrf": csrf}, headers=own).status_code == 303
            assert web.post("/console/login", data={"key": KEYS["beta"]},
                            headers={"Origin": "http://evil.example"}).status_code == 403
            page = web.get(f"/console/containers/{container_id}")
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert page.headers["x-frame-options"] == "DENY"
            assert page.headers["cache-control"] == "no-store"
        signed_out = httpx.get(f"{server.url}/console/responses")
        assert signed_out.status_code == 303 and signed_out.headers["location"] == "/console/login"
    finally:
        http.delete(f"/v1/containers/{container_id}")


def test_the_terminal_types_in_the_container_and_shows_the_output(
        page: Page, server: Server, http: httpx.Client, screens: Path) -> None:
    container_id = http.post("/v1/containers", json={"name": "terminal"}).json()["id"]
    try:
        sign_in(page, server)
        page.goto(f"{server.url}/console/containers/{container_id}")
        expect(page.locator("#terminal-status")).to_have_text("connected", timeout=30_000)
        page.locator("#terminal").click()
        page.keyboard.type("echo console-$((6*7)); stty size\n")
        rows = page.locator("#terminal .xterm-rows")
        expect(rows).to_contain_text("console-42", timeout=30_000)
        size = re.search(r"^(\d+) (\d+)$", rows.inner_text(), flags=re.M)  # stty prints rows, cols
        assert size is not None and int(size.group(1)) > 5 and int(size.group(2)) > 40, rows.inner_text()
        page.screenshot(path=screens / "terminal.png", full_page=True)
        page.keyboard.type("exit 3\n")
        expect(page.locator("#terminal-status")).to_have_text("exited with 3", timeout=30_000)
        page.reload()
        expect(page.locator("#audit")).to_contain_text("terminal")
    finally:
        http.delete(f"/v1/containers/{container_id}")


def test_the_live_display_opens_from_the_container_page(
        page: Page, server: Server, http: httpx.Client, screens: Path) -> None:
    plain = http.post("/v1/containers", json={"name": "no display"}).json()["id"]
    desktop = http.post("/v1/containers", json={"name": "desktop", "image": "desktop", "memory_limit": "4g"})
    assert desktop.status_code == 200, desktop.text
    desktop_id = desktop.json()["id"]
    try:  # the display started and settled, its browser up
        settled = http.post(f"/v1/containers/{desktop_id}/computer", json={"actions": [{"type": "wait"}]})
        assert settled.status_code == 200, settled.text
        sign_in(page, server)
        page.goto(f"{server.url}/console/containers/{plain}")
        with page.expect_popup() as opening:
            page.click("#open-display")
        refused = opening.value
        expect(refused.locator("#error-message")).to_contain_text("has no display")
        refused.close()
        page.goto(f"{server.url}/console/containers/{desktop_id}")
        with page.expect_popup() as opening:
            page.click("#open-display")
        view = opening.value
        expect(view).to_have_url(re.compile(rf"/v1/containers/{desktop_id}/display/view\?token="), timeout=60_000)
        expect(view.locator("#status")).to_have_text("live", timeout=60_000)
        # noVNC draws the container's screen: its browser's window, lit
        view.wait_for_function("""() => { const c = document.querySelector('#screen canvas');
            if (!c || c.width != 1024) return false;
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 600) return true;
            return false; }""", timeout=60_000)
        view.screenshot(path=screens / "display.png")
    finally:
        http.delete(f"/v1/containers/{plain}")
        http.delete(f"/v1/containers/{desktop_id}")


def test_a_keyless_server_signs_in_any_key_from_this_machine_only_and_prices_responses(
        upstream: ScriptedUpstream) -> None:
    env = {"COVE_API_KEYS": "", "COVE_UPSTREAM_URL": upstream.url, "COVE_WARM_POOL": "0",
           "COVE_CONSOLE_PRICES": "scripted-model=2/8"}
    with running_server(data_dir("cove-console-keyless"), env) as keyless, \
            httpx.Client(base_url=keyless.url, timeout=60) as web:
        own = {"Origin": keyless.url}
        assert web.post("/console/login", data={"key": ""}, headers=own).status_code == 401
        assert web.post("/console/login", data={"key": "anything"}, headers=own).status_code == 303
        assert "project <b>default</b>" in web.get("/console/responses").text
        response = web.post("/v1/responses", json={"model": "scripted-model", "input": "price me"}).json()
        usage = response["usage"]
        dollars = (usage["input_tokens"] * 2 + usage["output_tokens"] * 8) / 1e6
        shown = web.get(f"/console/responses/{response['id']}").text
        assert f'<dd id="cost">${dollars:.6f}</dd>' in shown
        rebound = web.get("/console/responses", headers={"Host": "attacker.example"})  # DNS rebinding
        assert rebound.status_code == 403


def test_console_uploads_are_held_to_the_upload_cap(upstream: ScriptedUpstream) -> None:
    env = {"COVE_UPSTREAM_URL": upstream.url, "COVE_MAX_UPLOAD": "1m", "COVE_MAX_REQUEST": "64k"}
    with running_server(data_dir("cove-console-caps"), env) as capped, \
            httpx.Client(base_url=capped.url, timeout=60) as web, capped.http() as http:
        container_id = http.post("/v1/containers", json={"name": "capped"}).json()["id"]
        csrf = sign_in_plain(web, capped)
        path, own = f"/console/containers/{container_id}/files", {"Origin": capped.url}
        fits = web.post(path, files={"file": ("fits.bin", b"x" * (200 << 10))}, data={"csrf": csrf}, headers=own)
        assert fits.status_code == 303, fits.text  # past the JSON cap: an upload's own cap applies
        big = web.post(path, files={"file": ("big.bin", b"x" * (2 << 20))}, data={"csrf": csrf}, headers=own)
        assert big.status_code == 413
        listed = http.get(f"/v1/containers/{container_id}/files").json()["data"]
        assert [(f["path"], f["bytes"]) for f in listed] == [("/mnt/data/fits.bin", 200 << 10)]


def test_a_preview_opens_from_the_container_page(page: Page, server: Server, http: httpx.Client,
                                                 screens: Path) -> None:
    container_id = http.post("/v1/containers", json={"name": "preview"}).json()["id"]
    try:
        run(http, container_id, "mkdir -p /srv/site && echo '<h1>hello-preview</h1>' > /srv/site/index.html && "
                                "cd /srv/site && setsid python3 -m http.server 8000 --bind 127.0.0.1 "
                                ">/dev/null 2>&1 </dev/null &")
        eventually(lambda: http.get(f"/v1/containers/{container_id}/ports/8000/").status_code == 200,
                   what="the app in the container to listen")
        sign_in(page, server)
        page.goto(f"{server.url}/console/containers/{container_id}")
        page.fill("#port", "8000")
        with page.expect_popup() as opening:
            page.click("#open-preview")
        preview = opening.value
        expect(preview).to_have_url(re.compile(rf"/v1/containers/{container_id}/ports/8000/~[^/]+/$"))
        expect(preview.locator("h1")).to_have_text("hello-preview")
        preview.screenshot(path=screens / "preview.png")
    finally:
        http.delete(f"/v1/containers/{container_id}")


def test_a_session_outlives_a_restart_but_not_its_key(upstream: ScriptedUpstream) -> None:
    """Sessions are in the store: a restart keeps them; a restart without the session's key (or with it
    moved to another project) signs it out at its next request."""
    path = data_dir("cove-console-restart")
    server = Server(path, {"COVE_UPSTREAM_URL": upstream.url})
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as web:
            sign_in_plain(web, server)
            server.stop()
            server.start()
            assert web.get("/console/responses").status_code == 200
            server.stop()
            server.env["COVE_API_KEYS"] = f"{KEYS['alpha']}=beta"
            server.start()
            answer = web.get("/console/responses")
            assert (answer.status_code, answer.headers.get("location")) == (303, "/console/login")
    finally:
        server.stop()
        shutil.rmtree(path, ignore_errors=True)
