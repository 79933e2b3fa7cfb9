"""Interactive terminals through the API: ``GET /v1/containers/{id}/pty`` (a WebSocket to a real
pseudo-terminal the container's init allocates) with the key or a pty token, typing and reading back,
resizes seen by the program, the exit message, several at once, the audit trail, and the refusals."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.connection import Connection

from cove.service.terminals import MAX_TERMINALS
from tests.conftest import KEYS, Server
from tests.helpers import IdleWebSocket, run
from tests.polling import eventually

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def box(http: httpx.Client) -> Iterator[str]:
    created = http.post("/v1/containers", json={"name": "terminals"})
    assert created.status_code == 200, created.text
    yield created.json()["id"]
    http.delete(f"/v1/containers/{created.json()['id']}")


def pty_url(server: Server, container_id: str, **query: Any) -> str:
    url = server.url.replace("http://", "ws://") + f"/v1/containers/{container_id}/pty"
    return str(httpx.URL(url, params=query))


def open_pty(server: Server, container_id: str, project: str = "alpha", **query: Any) -> Connection:
    headers = {"Authorization": f"Bearer {KEYS[project]}"} if "token" not in query else {}
    return connect(pty_url(server, container_id, **query), additional_headers=headers, open_timeout=30)


def read_until(ws: Connection, marker: bytes, timeout: float = 20) -> bytes:
    """Terminal bytes until ``marker`` shows (control frames are not expected meanwhile)."""
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        assert isinstance(frame, bytes), f"a text frame {frame!r} before {marker!r} in {data!r}"
        data += frame
    return data


def exit_message(ws: Connection, timeout: float = 20) -> dict[str, Any]:
    """Skips terminal bytes up to the exit message; the server then closes with 1000."""
    deadline = time.monotonic() + timeout
    while True:
        frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(frame, str):
            message: dict[str, Any] = json.loads(frame)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
            return message


def refusal(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers=headers or {}, open_timeout=30).close()
    response = refused.value.response
    return response.status_code, json.loads(response.body or b"{}")


def test_typing_in_a_shell_echoes_and_runs(server: Server, box: str) -> None:
    with open_pty(server, box) as ws:
        ws.send(b"echo hi-$((40+2))\r")
        out = read_until(ws, b"hi-42")
        assert b"echo hi-$((40+2))" in out  # the terminal echoed what was typed
        ws.send(b"tty; echo TERM=$TERM\r")
        out = read_until(ws, b"TERM=xterm-256color")
        assert b"/dev/pts/" in out
        ws.send(b"exit 3\r")
        assert exit_message(ws) == {"type": "exit", "exit_code": 3}


def test_the_size_and_resizes_are_what_stty_sees(server: Server, box: str) -> None:
    with open_pty(server, box, cols=100, rows=30) as ws:
        ws.send(b"stty size\r")
        read_until(ws, b"30 100")
        ws.send(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
        ws.send(b"stty size\r")
        read_until(ws, b"40 120")
        ws.send(json.dumps({"type": "something_later", "x": 1}))  # unknown control types are ignored
        ws.send(b"exit\r")
        assert exit_message(ws) == {"type": "exit", "exit_code": 0}


def test_a_command_runs_and_its_exit_code_and_last_output_arrive(server: Server, box: str) -> None:
    with open_pty(server, box, command="seq 1 2000; exit 7") as ws:
        out = b""
        while True:
            frame = ws.recv(timeout=20)
            if isinstance(frame, str):
                break
            out += frame
        assert json.loads(frame) == {"type": "exit", "exit_code": 7}
        assert out.rstrip().endswith(b"2000"), out[-200:]


def test_several_terminals_at_once_and_the_audit_trail(http: httpx.Client, server: Server, box: str) -> None:
    sockets = [open_pty(server, box) for _ in range(3)]
    try:
        for index, ws in enumerate(sockets):
            ws.send(f"echo shell-$((100+{index}))\r".encode())
        for index, ws in enumerate(sockets):
            read_until(ws, f"shell-{100 + index}".encode())
    finally:
        for ws in sockets:
            ws.close()

    def audited() -> list[dict[str, Any]]:
        answer = http.get(f"/v1/containers/{box}/audit", params={"limit": 100})
        assert answer.status_code == 200, answer.text
        events = answer.json()["data"]
        found = [e for e in events if e["type"] == "terminal" and e["bytes_in"] == len("echo shell-$((100+0))\r")]
        assert len(found) == 3, events
        return found

    event = eventually(audited, what="three terminals in the audit trail", ignoring=(AssertionError,))[0]
    assert event["via"] == "api_key" and event["command"] is None and (event["cols"], event["rows"]) == (80, 24)
    assert event["bytes_out"] > 0 and event["duration_ms"] > 0


def test_closing_the_socket_ends_everything_started_on_the_terminal(http: httpx.Client, server: Server,
                                                                    box: str) -> None:
    with open_pty(server, box) as ws:
        ws.send(b"sleep 4242 & sleep 4343\r")
        read_until(ws, b"sleep 4343")

        def started() -> bool:
            return "4343" in str(run(http, box, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")[0]["stdout"])

        eventually(started, what="the sleeps to start")

    def gone() -> bool:
        listed = str(run(http, box, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")[0]["stdout"])
        return "4242" not in listed and "4343" not in listed

    eventually(gone, what="the terminal's processes to end")


def test_pty_tokens_open_their_container_only_for_their_project(http: httpx.Client, server: Server,
                                                                 box: str) -> None:
    minted = http.post(f"/v1/containers/{box}/pty/token")
    assert minted.status_code == 200, minted.text
    body = minted.json()
    assert body["object"] == "container.pty_token" and 50 <= body["expires_at"] - time.time() <= 61
    with open_pty(server, box, token=body["token"]) as ws:  # no Authorization header
        ws.send(b"echo via-$((6*7))\r")
        read_until(ws, b"via-42")

    other = http.post("/v1/containers", json={"name": "other"}).json()["id"]
    try:
        status, error = refusal(pty_url(server, other, token=body["token"]))  # another container's token
        assert status == 401 and error["error"]["code"] == "invalid_pty_token"
    finally:
        http.delete(f"/v1/containers/{other}")
    status, error = refusal(pty_url(server, box, token=body["token"][:-3] + "AAA"))
    assert status == 401 and error["error"]["code"] == "invalid_pty_token"
    status, _ = refusal(pty_url(server, box, token="not-a-token"))
    assert status == 401


def test_refusals_before_the_upgrade(server: Server, box: str) -> None:
    beta = {"Authorization": f"Bearer {KEYS['beta']}"}
    alpha = {"Authorization": f"Bearer {KEYS['alpha']}"}
    assert refusal(pty_url(server, box), beta)[0] == 404  # another project's container
    assert httpx.post(f"{server.url}/v1/containers/{box}/pty/token", headers=beta).status_code == 404
    assert refusal(pty_url(server, "cntr_nonexistent"), alpha)[0] == 404
    assert refusal(pty_url(server, box))[0] == 401  # no key, no token
    for query, param in (({"cols": 0}, "cols"), ({"rows": "x"}, "rows"), ({"cols": 1001}, "cols"),
                         ({"command": ""}, "command")):
        status, error = refusal(pty_url(server, box, **query), alpha)
        assert status == 400 and error["error"]["param"] == param, error


def test_a_malformed_control_frame_closes_with_1007(server: Server, box: str) -> None:
    with open_pty(server, box) as ws:
        ws.send("not json")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=20)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007


def test_terminals_per_container_are_capped(server: Server, box: str) -> None:
    sockets = [open_pty(server, box) for _ in range(MAX_TERMINALS)]
    try:
        status, error = refusal(pty_url(server, box), {"Authorization": f"Bearer {KEYS['alpha']}"})
        assert status == 429 and error["error"]["code"] == "too_many_terminals"
    finally:
        for ws in sockets:
            ws.close()


def test_a_paused_container_resumes_for_a_terminal_as_for_a_command(http: httpx.Client, server: Server,
                                                                     box: str) -> None:
    assert http.post(f"/v1/containers/{box}/pause").json()["status"] == "paused"
    with open_pty(server, box, command="echo awake-$((2*21))") as ws:
        read_until(ws, b"awake-42")
        assert exit_message(ws) == {"type": "exit", "exit_code": 0}
    assert http.get(f"/v1/containers/{box}").json()["status"] == "running"


def test_a_deleted_container_ends_its_terminal(http: httpx.Client, server: Server) -> None:
    container_id = http.post("/v1/containers", json={"name": "doomed"}).json()["id"]
    with open_pty(server, container_id) as ws:
        ws.send(b"echo up-$((1+1))\r")
        read_until(ws, b"up-2")
        assert http.delete(f"/v1/containers/{container_id}").status_code == 200
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=30)


def test_a_client_that_stops_reading_is_dropped_and_its_program_ended(http: httpx.Client, server: Server,
                                                                        box: str) -> None:
    """`yes` floods a terminal nobody reads: the relay waits instead of buffering (the program blocks
    on its full terminal), then lets the client go and ends the program."""
    idle = IdleWebSocket(pty_url(server, box, command="yes flood-marker-$((6*7))"),
                         {"Authorization": f"Bearer {KEYS['alpha']}"})
    try:
        def audited() -> bool:
            events = http.get(f"/v1/containers/{box}/audit", params={"limit": 20}).json()["data"]
            return any(e["type"] == "terminal" and e["command"] == "yes flood-marker-$((6*7))" for e in events)

        eventually(audited, timeout=60, what="the stalled terminal to end and be audited")
        listed = str(run(http, box, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")[0]["stdout"])
        assert "flood-marker" not in listed
    finally:
        idle.sock.close()


def test_domain_secrets_on_a_terminal_show_as_placeholders(http: httpx.Client, server: Server) -> None:
    """As in a command's output: a value that reached the container (here, in a file the client wrote;
    in life, a server echoing it) shows as its placeholder, also when it arrives in two pieces, and in a
    fork (whose secret is sealed again for it)."""
    value = "sk-term-" + secrets.token_hex(12)
    policy = {"type": "allowlist", "allowed_domains": ["api.cove.test"],
              "domain_secrets": [{"domain": "api.cove.test", "name": "TERM_TOKEN", "value": value}]}
    made = http.post("/v1/containers", json={"name": "term-secret", "network_policy": policy})
    assert made.status_code == 200, made.text
    parent = made.json()["id"]
    child = None
    try:
        http.post(f"/v1/containers/{parent}/files", files={"file": ("v", value.encode())}).raise_for_status()
        placeholder = run(http, parent, "printenv TERM_TOKEN")[0]["stdout"].strip()
        assert placeholder.startswith("cove_secret_")
        child = http.post(f"/v1/containers/{parent}/fork").raise_for_status().json()["data"][0]["id"]
        for container_id in (parent, child):
            with open_pty(server, container_id, command="echo [$(cat /mnt/data/v)]; head -c 10 /mnt/data/v; "
                                                          "sleep 0.5; tail -c +11 /mnt/data/v; echo ]") as ws:
                out = b""
                while isinstance(frame := ws.recv(timeout=20), bytes):
                    out += frame
            assert json.loads(frame) == {"type": "exit", "exit_code": 0}
            assert value.encode() not in out and value[:10].encode() not in out, out
            assert out.count(placeholder.encode()) == 2, out
    finally:
        for container_id in (parent, child):
            if container_id is not None:
                http.delete(f"/v1/containers/{container_id}")


def test_a_pty_token_opens_on_another_server_process_with_the_key_file(own_server: Server) -> None:
    """Token keys come from the sealing key (as replicas share it): one minted before a restart opens a
    terminal after it, as one minted by one replica opens on another."""
    with own_server.http() as http:
        made = http.post("/v1/containers", json={"name": "token-restart"})
        assert made.status_code == 200, made.text
        container_id = made.json()["id"]
        token = http.post(f"/v1/containers/{container_id}/pty/token").json()["token"]
    own_server.stop()
    own_server.start()
    with connect(pty_url(own_server, container_id, token=token, command="echo token-$((40+2))"),
                 open_timeout=30) as ws:
        assert b"token-42" in read_until(ws, b"token-42")
        assert exit_message(ws) == {"type": "exit", "exit_code": 0}
