"""What a container offers beyond commands and files, through the fleet's API on a real node
(``conftest.py``'s ``fleet``): a terminal over the PTY WebSocket, a preview of a web server in the
container, a stdio MCP server in the container, pause and resume, skills, and a desktop's display and
live view. Byte streams cross the node's relay (``sandbox/fleet/relay.py``): it listens on the node's
address only, and nothing of the cluster or the server talks to anything outside loopback."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.api.test_display import Rfb, act, key, screenshot_of, socket_url
from tests.api.test_terminal import exit_message, open_pty, read_until
from tests.conftest import IMAGES_DIR, Server
from tests.helpers import greet_skill, run
from tests.polling import eventually
from tests.ray_cluster import RayNode, container_init, sockets_of
from tests.responses.test_mcp import MODEL, STDIO_SERVER
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def http(fleet: Server) -> Iterator[httpx.Client]:
    with fleet.http() as client:
        yield client


def _host_listeners(node: RayNode) -> set[str]:
    """The addresses the node's ``SandboxHost`` worker listens on."""
    host = node.host_worker()
    lines = subprocess.run(["ss", "-tlnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    return {line.split()[3] for line in lines if f"pid={host}," in line}


@pytest.fixture(scope="module")
def ray_listeners(fleet: Server, node: RayNode) -> set[str]:
    """What the host listens on before any stream was opened: Ray's own servers (its gRPC on ``*``)."""
    return _host_listeners(node)


@pytest.fixture(scope="module")
def box(http: httpx.Client, ray_listeners: set[str]) -> Iterator[str]:
    created = http.post("/v1/containers", json={"name": "streams"})
    assert created.status_code == 200, created.text
    yield created.json()["id"]
    http.delete(f"/v1/containers/{created.json()['id']}")


def test_a_terminal_types_resizes_and_exits(fleet: Server, box: str) -> None:
    with open_pty(fleet, box) as ws:
        ws.send(b"echo hi-$((40+2))\r")
        assert b"echo hi-$((40+2))" in read_until(ws, b"hi-42")  # the terminal echoed what was typed
        ws.send(json.dumps({"type": "resize", "cols": 101, "rows": 33}))
        ws.send(b"stty size\r")
        read_until(ws, b"33 101")
        ws.send(b"exit 7\r")
        assert exit_message(ws) == {"type": "exit", "exit_code": 7}


def test_a_web_server_in_the_container_is_previewed(http: httpx.Client, box: str) -> None:
    run(http, box, "mkdir -p /srv/site && echo hello-fleet > /srv/site/page.txt && cd /srv/site && "
                   "setsid python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 </dev/null &")
    page = f"/v1/containers/{box}/ports/8000/page.txt"
    eventually(lambda: http.get(page).status_code == 200, what="the server in the container to listen")
    assert http.get(page).text == "hello-fleet\n"
    assert http.get(f"/v1/containers/{box}/ports/8000/missing").status_code == 404  # the app's own 404
    refused = http.get(f"/v1/containers/{box}/ports/8009/")  # nothing listens there
    assert refused.status_code == 502 and refused.json()["error"]["code"] == "port_unreachable", refused.text


def _freezer_state(node_dir: Path, container_id: str) -> str:
    """The container's cgroup v1 freezer state on the node (FROZEN while paused)."""
    init = container_init(node_dir, container_id)
    line = next(line for line in Path(f"/proc/{init}/cgroup").read_text().splitlines()
                if line.split(":")[1] == "freezer")
    return (Path("/sys/fs/cgroup/freezer") / line.split(":", 2)[2].lstrip("/") / "freezer.state").read_text().strip()


def test_pause_freezes_the_container_and_a_command_resumes_it(http: httpx.Client, box: str, node_dir: Path) -> None:
    paused = http.post(f"/v1/containers/{box}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused", paused.text
    assert _freezer_state(node_dir, box) == "FROZEN"
    resumed = http.post(f"/v1/containers/{box}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "running", resumed.text
    assert _freezer_state(node_dir, box) == "THAWED"
    http.post(f"/v1/containers/{box}/pause")
    assert run(http, box, "echo awake")[0]["stdout"] == "awake\n"  # a command resumes it, as on one machine
    assert http.get(f"/v1/containers/{box}").json()["status"] == "running"
    assert _freezer_state(node_dir, box) == "THAWED"


def test_a_container_made_with_a_skill_has_it(http: httpx.Client) -> None:
    created = http.post("/v1/containers", json={"name": "skilled", "skills": [greet_skill()]})
    assert created.status_code == 200, created.text
    cid = created.json()["id"]
    try:
        outputs = run(http, cid, "head -2 /skills/greet/SKILL.md", "/skills/greet/hello.sh", "touch /skills/greet/x")
        assert [output["stdout"] for output in outputs[:2]] == ["---\nname: greet\n", "hello from a skill\n"]
        assert outputs[2]["outcome"] != {"type": "exit", "exit_code": 0}  # read-only, as on one machine
    finally:
        http.delete(f"/v1/containers/{cid}")


def test_a_stdio_mcp_server_runs_in_the_responses_container(fleet: Server, upstream: ScriptedUpstream) -> None:
    tools: Any = [{"type": "mcp", "server_label": "box", "command": ["python3", "-c", STDIO_SERVER],
                   "require_approval": "never"}]
    upstream.reset()  # a turn an earlier module scripted for a response that failed is never used
    upstream.script([Reply(tool_calls=[ToolCall("box__where", "{}")]), Reply(text="inside")])
    response = fleet.client().responses.create(model=MODEL, input="where?", tools=tools)
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "message"], response.output
    call = response.output[1]
    assert call.type == "mcp_call" and call.output and call.output.startswith("cove-init here: True"), call


@pytest.fixture(scope="module")
def desktop(http: httpx.Client) -> Iterator[str]:
    if not (IMAGES_DIR / "manifests" / "desktop.json").exists():
        pytest.fail(f"the desktop image is missing in {IMAGES_DIR}: run `make image`")
    created = http.post("/v1/containers", json={"name": "desktop", "image": "desktop", "memory_limit": "4g"})
    assert created.status_code == 200, created.text
    yield created.json()["id"]
    http.delete(f"/v1/containers/{created.json()['id']}")


def test_a_desktop_acts_shows_and_is_viewed(fleet: Server, http: httpx.Client, desktop: str, box: str) -> None:
    png = screenshot_of(act(http, desktop, [{"type": "move", "x": 10, "y": 10}], environment="linux",
                            display_width=800, display_height=600))
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[16:24] == (800).to_bytes(4, "big") + (600).to_bytes(4, "big")
    shot = http.get(f"/v1/containers/{desktop}/screenshot")
    assert shot.status_code == 200 and shot.content.startswith(b"\x89PNG"), shot.text[:200]
    with connect(socket_url(fleet, desktop), additional_headers=key("alpha"), open_timeout=30) as ws:
        width, height, _name = Rfb(ws).handshake()
    assert (width, height) == (800, 600)
    refused = act(http, box, [{"type": "screenshot"}])  # a plain image has no display: refused before anything runs
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "no_display", refused.text


def test_the_relay_listens_on_the_nodes_address_only(fleet: Server, node: RayNode, box: str,
                                                     ray_listeners: set[str]) -> None:
    with open_pty(fleet, box, command="exit 3") as ws:
        assert exit_message(ws)["exit_code"] == 3
    relay = _host_listeners(node) - ray_listeners
    assert relay and all(address.startswith(f"{node.ip}:") for address in relay), (relay, ray_listeners)
    outside, _wildcard = sockets_of(node.cluster.all_pids() | {fleet.proc.pid if fleet.proc else 0})
    assert outside == []
