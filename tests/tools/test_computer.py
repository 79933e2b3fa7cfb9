"""Hosted computer use end to end: a real server, a scripted model over HTTP (a Chat Completions upstream
and a Responses upstream), and real Chromium in a real desktop container.

A page served inside the container (``python3 -m http.server`` on its loopback, started by a hosted
shell call or by exec) records what the browser did in the server's log: the test reads the page's own
state from there, not from the screenshots, and checks that the screenshots differ too.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import openai
import pytest

from cove.sandbox.linux.display import png_size
from tests.conftest import IMAGES_DIR, KEYS, Server, _server_env, data_dir, running_server
from tests.desktop_page import BUTTON, FIELD, LOG, PAGE
from tests.helpers import run, stream_response
from tests.internet import Internet
from tests.polling import eventually
from tests.postgres import PostgresServer
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall
from tests.wire_shapes import event_errors, response_errors

pytestmark = pytest.mark.root

MODEL = "scripted-model"
SERVE = [f"mkdir -p /srv/page && cat > /srv/page/index.html <<'EOF'\n{PAGE}EOF",
         f"cd /srv/page && setsid python3 -m http.server 8000 --bind 127.0.0.1 >{LOG} 2>&1 </dev/null &"]
URL = "http://127.0.0.1:8000/"
SHELL = {"type": "shell", "environment": {"type": "container_auto"}}
PREVIEW = {"type": "computer_use_preview", "display_width": 1024, "display_height": 768, "environment": "browser"}
OPEN_PAGE = [{"type": "keypress", "keys": ["CTRL", "L"]}, {"type": "type", "text": URL},
             {"type": "keypress", "keys": ["ENTER"]}, {"type": "wait"}]
CLICK = {"type": "click", "x": BUTTON[0], "y": BUTTON[1], "button": "left"}
FILL = [{"type": "click", "x": FIELD[0], "y": FIELD[1], "button": "left"},
        {"type": "type", "text": "hello computer"}, {"type": "keypress", "keys": ["ENTER"]}]
CHECK = {"id": "cu_sc_1", "code": "malicious_instructions", "message": "The page may not be what it says."}


@pytest.fixture(autouse=True)
def need_desktop() -> None:
    if not (IMAGES_DIR / "manifests" / "desktop.json").exists():
        pytest.fail(f"the desktop image is missing in {IMAGES_DIR}: run `make image`")


@pytest.fixture(scope="module")
def responses_server(upstream: ScriptedUpstream, postgres: PostgresServer | None) -> Iterator[Server]:
    """A server whose upstream speaks the Responses API (the same scripted model)."""
    env = {**_server_env(upstream, postgres), "COVE_UPSTREAM_API": "responses"}
    with running_server(data_dir("cove-computer"), env) as srv:
        yield srv


@pytest.fixture(scope="module")
def rhttp(responses_server: Server) -> Iterator[httpx.Client]:
    with responses_server.http() as c:
        yield c


def computer(action: dict[str, Any]) -> Reply:
    return Reply(tool_calls=[ToolCall("computer", json.dumps(action))])


def native(call_id: str, checks: list[dict[str, Any]] | None = None, **shape: Any) -> Reply:
    return Reply(native_items=[{"type": "computer_call", "id": f"cu_{call_id}", "call_id": call_id,
                                "status": "completed", "pending_safety_checks": checks or [], **shape}])


def png(item: dict[str, Any]) -> bytes:
    url = item["output"]["image_url"]
    assert url.startswith("data:image/png;base64,"), url[:40]
    return base64.b64decode(url.split(",", 1)[1])


def page_log(http: httpx.Client, container_id: str) -> str:
    return str(run(http, container_id, f"cat {LOG}")[0]["stdout"])


def wait_for(http: httpx.Client, container_id: str, line: str) -> None:
    """Until the page's log has ``line``; a timeout shows the log as it was (did the page load at all?)."""
    def logged() -> bool:
        log = page_log(http, container_id)
        if line not in log:
            raise LookupError(f"the page's log so far: {log!r}")
        return True
    eventually(logged, what=f"{line!r} in the page's log", ignoring=(LookupError,))


def desktop_container(http: httpx.Client, **options: Any) -> str:
    created = http.post("/v1/containers", json={"name": "desktop", "image": "desktop", "memory_limit": "4g",
                                                **options})
    assert created.status_code == 200, created.text
    container_id = str(created.json()["id"])
    run(http, container_id, *SERVE)
    return container_id


def test_a_chat_model_drives_chromium_beside_a_hosted_shell(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    """One request, as the issue's example: the shell serves a page, the computer opens it, clicks the
    button and fills the field; the page's own log shows both, and the chat model saw each screenshot."""
    opening = [computer(action) for action in OPEN_PAGE]
    upstream.script([Reply(tool_calls=[ToolCall("shell", json.dumps({"commands": SERVE}))]), *opening,
                     computer(CLICK), *(computer(action) for action in FILL), Reply(text="Clicked and typed.")])
    events = stream_response(http, {"model": MODEL, "input": "Open the page, click, type.",
                                    "tools": [SHELL, PREVIEW]})
    response = events[-1]["response"]
    assert response["status"] == "completed", (response.get("error"), response["output"][-2:])
    assert [error for event in events for error in event_errors(event)] == []
    assert response_errors(response) == []
    container_id = response["container_id"]
    assert http.get(f"/v1/containers/{container_id}").json()["image"] == "desktop"
    wait_for(http, container_id, "GET /clicked")
    wait_for(http, container_id, "GET /submitted?text=hello+computer")

    calls = [i for i in response["output"] if i["type"] == "computer_call"]
    outputs = [i for i in response["output"] if i["type"] == "computer_call_output"]
    assert [c["action"]["type"] for c in calls] == ["keypress", "type", "keypress", "wait", "click", "click",
                                                    "type", "keypress"]
    assert [o["call_id"] for o in outputs] == [c["call_id"] for c in calls]
    assert all(o["status"] == "completed" for o in outputs)
    shots = [png(o) for o in outputs]
    assert all(png_size(shot) == (1024, 768) for shot in shots)
    before_click, after_click = shots[3], shots[4]
    assert before_click != after_click
    # Streamed as it happened: each call is done before its output is added.
    order = [(e["type"], e["item"]["type"]) for e in events if e["type"] == "response.output_item.done"]
    assert [kind for _, kind in order[:4]] == ["shell_call", "shell_call_output", "computer_call",
                                               "computer_call_output"]
    # The chat upstream got a computer function and, after each call, the tool message and the screenshot.
    first = upstream.requests[0]
    assert [t["function"]["name"] for t in first["tools"]] == ["shell", "computer"]
    last = upstream.requests[-1]["messages"]
    images = [part["image_url"]["url"] for m in last if m["role"] == "user" and isinstance(m["content"], list)
              for part in m["content"] if part["type"] == "image_url"]
    assert images == [o["output"]["image_url"] for o in outputs[-3:]]  # the newest three as images
    tool_results = [m["content"] for m in last if m["role"] == "tool"]
    assert len(tool_results) == 1 + len(outputs)
    assert last[-1]["role"] == "user" and last[-2]["role"] == "tool"
    # Each call's actions are in the container's audit trail, credited to the response.
    audit = http.get(f"/v1/containers/{container_id}/audit", params={"limit": 100, "order": "asc"}).json()
    batches = [event for event in audit["data"] if event["type"] == "computer"]
    assert [event["actions"] for event in batches] == [[call["action"]] for call in calls]
    assert {event["response_id"] for event in batches} == {response["id"]}


def test_a_responses_model_batches_actions_on_a_named_desktop_container(rhttp: httpx.Client,
                                                                        upstream: ScriptedUpstream) -> None:
    container_id = desktop_container(rhttp)
    upstream.script([native("call_open", actions=OPEN_PAGE), native("call_click", actions=[CLICK, *FILL]),
                     Reply(text="done")])
    created = rhttp.post("/v1/responses", json={"model": MODEL, "input": "go",
                                                "tools": [{"type": "computer", "container": container_id}]})
    assert created.status_code == 200, created.text
    response = created.json()
    assert response_errors(response) == []
    assert response["status"] == "completed" and response["container_id"] == container_id
    assert [i["type"] for i in response["output"]] == ["computer_call", "computer_call_output"] * 2 + ["message"]
    wait_for(rhttp, container_id, "GET /clicked")
    wait_for(rhttp, container_id, "GET /submitted?text=hello+computer")
    opened, clicked = png(response["output"][1]), png(response["output"][3])
    assert opened != clicked
    # The upstream got the tool natively, and the calls and screenshots back as computer items.
    assert upstream.requests[0]["tools"] == [{"type": "computer"}]
    sent = upstream.requests[-1]["input"]
    outputs = [i for i in sent if i["type"] == "computer_call_output"]
    assert [o["call_id"] for o in outputs] == ["call_open", "call_click"]
    assert outputs[1]["output"]["image_url"] == response["output"][3]["output"]["image_url"]


def test_a_safety_check_holds_the_call_until_the_client_acknowledges_it(rhttp: httpx.Client,
                                                                         upstream: ScriptedUpstream) -> None:
    container_id = desktop_container(rhttp)
    tool = {**PREVIEW, "container": container_id}
    upstream.script([native("call_open", action={"type": "keypress", "keys": ["CTRL", "L"]}),
                     native("call_url", action={"type": "type", "text": URL}),
                     native("call_go", action={"type": "keypress", "keys": ["ENTER"]}),
                     native("call_held", [CHECK], action=CLICK)])
    first = rhttp.post("/v1/responses", json={"model": MODEL, "input": "go", "tools": [tool]}).json()
    assert first["status"] == "completed", first
    held = first["output"][-1]
    assert held["type"] == "computer_call" and held["call_id"] == "call_held"
    assert held["pending_safety_checks"] == [CHECK] and held["status"] == "completed"
    wait_for(rhttp, container_id, "GET /loaded")
    assert "GET /clicked" not in page_log(rhttp, container_id)  # held: not performed

    def answer(checks: list[dict[str, Any]]) -> httpx.Response:
        return rhttp.post("/v1/responses", json={
            "model": MODEL, "previous_response_id": first["id"], "tools": [tool],
            "input": [{"type": "computer_call_output", "call_id": "call_held", "acknowledged_safety_checks": checks,
                       "output": {"type": "computer_screenshot"}}]})

    for wrong in ([], [{"id": "cu_sc_other"}]):
        refused = answer(wrong)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "input[0].acknowledged_safety_checks"
    assert "GET /clicked" not in page_log(rhttp, container_id)

    upstream.script([Reply(text="clicked after your go-ahead")])
    second = answer([CHECK])
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["status"] == "completed"
    assert [i["type"] for i in body["output"]] == ["computer_call_output", "message"]
    performed = body["output"][0]
    assert performed["call_id"] == "call_held" and performed["acknowledged_safety_checks"] == [CHECK]
    assert png_size(png(performed)) == (1024, 768)
    wait_for(rhttp, container_id, "GET /clicked")
    sent = [i for i in upstream.requests[-1]["input"] if i.get("call_id") == "call_held"]
    assert [i["type"] for i in sent] == ["computer_call", "computer_call_output"]
    assert sent[1]["acknowledged_safety_checks"] == [CHECK] and sent[1]["output"]["image_url"]


def test_a_container_without_a_display_is_refused_before_anything_runs(http: httpx.Client,
                                                                        upstream: ScriptedUpstream) -> None:
    plain = http.post("/v1/containers", json={"name": "plain"}).json()
    refused = http.post("/v1/responses", json={"model": MODEL, "input": "go", "tools": [
        {"type": "function", "name": "f"}, {**PREVIEW, "container": plain["id"]}]})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "tools[1]" and error["code"] == "no_display" and plain["id"] in error["message"]
    assert upstream.requests == []


def test_client_side_by_default(http: httpx.Client, upstream: ScriptedUpstream) -> None:
    upstream.script([computer(CLICK)])
    first = http.post("/v1/responses", json={"model": MODEL, "input": "go", "tools": [PREVIEW]}).json()
    assert first["status"] == "completed" and first.get("container_id") is None
    call = first["output"][-1]
    assert call["type"] == "computer_call" and call["action"] == CLICK
    upstream.script([Reply(text="I see it")])
    shot = "data:image/png;base64," + base64.b64encode(b"\x89PNG client screenshot").decode()
    second = http.post("/v1/responses", json={
        "model": MODEL, "previous_response_id": first["id"], "tools": [PREVIEW],
        "input": [{"type": "computer_call_output", "call_id": call["call_id"],
                   "output": {"type": "computer_screenshot", "image_url": shot}}]}).json()
    assert second["status"] == "completed" and second["output"][-1]["content"][0]["text"] == "I see it"
    messages = upstream.requests[-1]["messages"]
    assert messages[-2]["role"] == "tool" and messages[-1]["content"][1]["image_url"]["url"] == shot


def test_the_browser_is_held_to_the_egress_allowlist(own_server: Server, internet: Internet,
                                                     upstream: ScriptedUpstream) -> None:
    own_server.stop()
    own_server.env.update(internet.server_env())
    own_server.start()
    with own_server.http() as http:
        policy = {"type": "allowlist", "allowed_domains": ["api.cove.test"]}
        auto = {"type": "auto", "network_policy": policy}
        before = len(internet.requests())

        def visit(host: str) -> list[Reply]:
            return [computer({"type": "keypress", "keys": ["CTRL", "L"]}),
                    computer({"type": "type", "text": f"http://{host}/echo?from=chromium"}),
                    computer({"type": "keypress", "keys": ["ENTER"]}), computer({"type": "wait"})]

        upstream.script([*visit("other.cove.test"), *visit("api.cove.test"), Reply(text="visited")])
        response = http.post("/v1/responses", json={"model": MODEL, "input": "visit",
                                                    "tools": [{**PREVIEW, "container": auto}]}).json()
        assert response["status"] == "completed", (response.get("error"), response["output"][-2:])

        def arrived() -> list[str]:
            return [" ".join([*(value for name, value in r["headers"] if name.lower() == "host"), r["path"]])
                    for r in internet.requests()[before:]]

        eventually(lambda: any("api.cove.test" in line and "chromium" in line for line in arrived()),
                   what="the allowed site to get the browser's request")
        assert not any("other.cove.test" in line for line in arrived()), arrived()
        audit = http.get(f"/v1/containers/{response['container_id']}/audit", params={"limit": 100}).json()
        egress = {(e["host"], e["allowed"]) for e in audit["data"] if e["type"] == "egress"}
        assert ("other.cove.test", False) in egress and ("api.cove.test", True) in egress, egress


def test_client_side_through_the_agents_sdk_computer_tool(server: Server, http: httpx.Client,
                                                          upstream: ScriptedUpstream) -> None:
    """The agents SDK's ``ComputerTool`` runs the calls on the client, here with an ``AsyncComputer`` that
    drives the container's display through Cove's action and screenshot endpoints: Cove returns each
    ``computer_call`` and the SDK answers with its screenshot."""
    from agents import Agent, AsyncComputer, ComputerTool, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)
    container_id = desktop_container(http)

    class CoveComputer(AsyncComputer):
        def __init__(self, client: httpx.AsyncClient) -> None:
            self.client = client

        @property
        def environment(self) -> Literal["browser"]:
            return "browser"

        @property
        def dimensions(self) -> tuple[int, int]:
            return 1024, 768

        async def _act(self, action: dict[str, Any]) -> None:
            answer = await self.client.post(f"/v1/containers/{container_id}/computer", json={
                "actions": [action], "environment": "browser", "display_width": 1024, "display_height": 768})
            assert answer.status_code == 200, answer.text
            assert answer.json()["screenshot"]["image_url"].startswith("data:image/png;base64,")

        async def screenshot(self) -> str:
            answer = await self.client.get(f"/v1/containers/{container_id}/screenshot")
            assert answer.status_code == 200 and answer.content.startswith(b"\x89PNG"), answer.text
            return base64.b64encode(answer.content).decode()

        async def click(self, x: int, y: int, button: str) -> None:
            await self._act({"type": "click", "x": x, "y": y, "button": button})

        async def double_click(self, x: int, y: int) -> None:
            await self._act({"type": "double_click", "x": x, "y": y})

        async def scroll(self, x: int, y: int, scroll_x: int, scroll_y: int) -> None:
            await self._act({"type": "scroll", "x": x, "y": y, "scroll_x": scroll_x, "scroll_y": scroll_y})

        async def type(self, text: str) -> None:
            await self._act({"type": "type", "text": text})

        async def wait(self) -> None:
            await self._act({"type": "wait"})

        async def move(self, x: int, y: int) -> None:
            await self._act({"type": "move", "x": x, "y": y})

        async def keypress(self, keys: list[str]) -> None:
            await self._act({"type": "keypress", "keys": keys})

        async def drag(self, path: list[tuple[int, int]]) -> None:
            await self._act({"type": "drag", "path": [{"x": x, "y": y} for x, y in path]})

    upstream.script([computer({"actions": OPEN_PAGE}), computer({"actions": [CLICK, *FILL]}),
                     Reply(text="Clicked and typed.")])

    async def main() -> Any:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEYS["alpha"]) as client, \
                httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {KEYS['alpha']}"},
                                  timeout=120) as cove:
            agent = Agent(name="browser", instructions="Use the computer.", tools=[ComputerTool(CoveComputer(cove))],
                          model=OpenAIResponsesModel(model=MODEL, openai_client=client))
            return await Runner.run(agent, "Click the button and type hello computer.")

    result = asyncio.run(main())
    assert str(result.final_output) == "Clicked and typed."
    wait_for(http, container_id, "GET /clicked")
    wait_for(http, container_id, "GET /submitted?text=hello+computer")
    # Cove gave the SDK computer calls (GA: a batch each), and the chat model read the SDK's screenshots.
    assert [item.type for item in result.new_items].count("tool_call_output_item") == 2
    last = upstream.requests[-1]["messages"]
    images = [part["image_url"]["url"] for m in last if m["role"] == "user" and isinstance(m["content"], list)
              for part in m["content"] if part["type"] == "image_url"]
    assert len(images) == 2 and images[0] != images[1]
