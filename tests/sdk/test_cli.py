"""The client half of the ``cove`` CLI, run as the real command against a real server and containers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import KEYS, Server, free_port
from tests.helpers import run
from tests.polling import eventually
from tests.scripted_upstream import Reply, ScriptedUpstream, ToolCall

pytestmark = pytest.mark.root

COVE = str(Path(sys.executable).parent / "cove")


def cove(server: Server, *args: str, project: str = "alpha", check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COVE_BASE_URL": server.url, "COVE_API_KEY": KEYS[project], "COLUMNS": "200"}
    done = subprocess.run([COVE, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def container(server: Server) -> str:
    container_id = cove(server, "containers", "create", "--name", "cli-test").stdout.strip()
    yield container_id
    cove(server, "containers", "rm", container_id, check=False)


def test_containers_create_ls_logs_rm(server: Server, container: str) -> None:
    assert container.startswith("cntr_")
    listing = cove(server, "containers", "ls").stdout
    assert container in listing and "cli-test" in listing and "running" in listing
    assert container not in cove(server, "containers", "ls", project="beta").stdout
    assert [c["id"] for c in json.loads(cove(server, "containers", "ls", "--json").stdout)].count(container) == 1
    cove(server, "exec", container, "--", "echo", "logged")
    logs = cove(server, "containers", "logs", container).stdout
    assert "$ echo logged  [exit 0," in logs
    assert json.loads(cove(server, "containers", "logs", container, "--json").stdout)["command"] == "echo logged"
    env = {**os.environ, "COVE_BASE_URL": server.url, "COVE_API_KEY": KEYS["alpha"]}
    with subprocess.Popen([COVE, "containers", "logs", container, "--follow"], env=env, stdout=subprocess.PIPE,
                          text=True) as following:
        try:
            assert following.stdout is not None
            assert "$ echo logged " in following.stdout.readline()
            cove(server, "exec", container, "--", "echo later")
            assert "$ echo later " in following.stdout.readline()
            cove(server, "containers", "rm", container)
            assert f"{container} was removed" in following.stdout.read()
            assert following.wait(timeout=60) == 0
        finally:
            if following.poll() is None:
                following.kill()
    container = cove(server, "containers", "create", "--name", "cli-test").stdout.strip()
    removed = cove(server, "containers", "rm", container, "cntr_unknown", check=False)
    assert removed.returncode == 1 and f"Removed {container}" in removed.stdout and "cntr_unknown" in removed.stdout
    assert container not in cove(server, "containers", "ls").stdout


def test_exec_streams_and_passes_the_exit_code(server: Server, container: str) -> None:
    failed = cove(server, "exec", container, "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (failed.returncode, failed.stdout, failed.stderr) == (3, "out\n", "err\n")
    assert cove(server, "exec", container, "-e", "X=1", "-w", "/tmp", "--", "echo $X $(pwd)").stdout == "1 /tmp\n"
    timed_out = cove(server, "exec", container, "--timeout", "1", "--", "sleep 30", check=False)
    assert timed_out.returncode == 124
    env = {**os.environ, "COVE_BASE_URL": f"{server.url}/v1", "COVE_API_KEY": KEYS["alpha"]}
    with subprocess.Popen([COVE, "exec", container, "--", "echo first; while [ ! -e /tmp/go ]; do sleep 0.1; "
                           "done; echo second"], env=env, stdout=subprocess.PIPE, text=True) as streaming:
        try:
            assert streaming.stdout is not None
            assert streaming.stdout.readline() == "first\n"  # before the command can end: it waits for /tmp/go
            assert streaming.poll() is None
            cove(server, "exec", container, "--", "touch /tmp/go")
            assert streaming.stdout.read() == "second\n"
            assert streaming.wait(timeout=60) == 0
        finally:
            if streaming.poll() is None:
                streaming.kill()


def test_exec_errors_are_one_line(server: Server) -> None:
    missing = cove(server, "exec", "cntr_nope", "--", "true", check=False)
    assert missing.returncode == 1 and "Error:" in missing.stderr and "Traceback" not in missing.stderr
    env = {**os.environ, "COVE_BASE_URL": f"http://127.0.0.1:{free_port()}", "COVE_API_KEY": "k"}
    down = subprocess.run([COVE, "containers", "ls"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "cannot reach Cove" in down.stderr


def test_cp_both_ways(server: Server, container: str, tmp_path: Path) -> None:
    blob = os.urandom(300_000)
    (tmp_path / "blob.bin").write_bytes(blob)
    cove(server, "cp", str(tmp_path / "blob.bin"), f"{container}:/mnt/data/")
    digest = cove(server, "exec", container, "--", "sha256sum /mnt/data/blob.bin").stdout.split()[0]
    assert digest == hashlib.sha256(blob).hexdigest()
    cove(server, "cp", f"{container}:/mnt/data/blob.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == blob
    cove(server, "exec", container, "--", "echo hi > /tmp/hi.txt")
    assert cove(server, "cp", f"{container}:/tmp/hi.txt", "-").stdout == "hi\n"
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.txt").write_text("b")
    cove(server, "cp", str(tree), f"{container}:/srv/tree")
    assert cove(server, "exec", container, "--", "cat /srv/tree/a.txt /srv/tree/sub/b.txt").stdout == "ab"
    cove(server, "cp", f"{container}:/srv/tree", str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "sub" / "b.txt").read_text() == "b"
    missing = cove(server, "cp", f"{container}:/nope", str(tmp_path / "x"), check=False)
    assert missing.returncode == 1 and "No such file" in missing.stderr
    both_local = cove(server, "cp", str(tree), str(tmp_path / "y"), check=False)
    assert both_local.returncode == 2


def test_responses_ls_and_show(server: Server, client: openai.OpenAI, upstream: ScriptedUpstream) -> None:
    upstream.script([Reply(tool_calls=[ToolCall("shell", json.dumps({"commands": ["echo trajectory-out"]}))]),
                     Reply(text="All done.")])
    response = client.responses.create(model="scripted-model", input="Run something.",
                                       tools=[{"type": "shell", "environment": {"type": "container_auto"}}])  # type: ignore[list-item]
    listing = cove(server, "responses", "ls").stdout
    assert response.id in listing and "completed" in listing
    assert response.id not in cove(server, "responses", "ls", project="beta").stdout
    shown = cove(server, "responses", "show", response.id).stdout
    assert "Run something." in shown and "$ echo trajectory-out (" in shown and " ms)" in shown
    assert "│ trajectory-out " in shown and "│ [exit 0] " in shown and "All done." in shown
    assert f"{response.usage.input_tokens} in" in shown  # type: ignore[union-attr]
    assert shown.index("Run something.") < shown.index("$ echo trajectory-out") < shown.index("All done.")
    data = json.loads(cove(server, "responses", "show", response.id, "--json").stdout)
    assert [event["command"] for event in data["audit"]] == ["echo trajectory-out"]
    missing = cove(server, "responses", "show", "resp_nope", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_list_responses_route(server: Server, client: openai.OpenAI, http: httpx.Client) -> None:
    ids = [client.responses.create(model="scripted-model", input=f"list {i}").id for i in range(3)]
    client.responses.create(model="scripted-model", input="not stored", store=False)
    first = http.get("/v1/responses", params={"limit": 2}).json()
    assert first["object"] == "list" and [r["id"] for r in first["data"]] == ids[::-1][:2] and first["has_more"]
    assert "output" not in first["data"][0] and first["data"][0]["status"] == "completed"
    second = http.get("/v1/responses", params={"limit": 2, "after": first["last_id"]}).json()
    assert second["data"][0]["id"] == ids[0]
    with server.http("beta") as beta:
        assert ids[0] not in {r["id"] for r in beta.get("/v1/responses", params={"limit": 100}).json()["data"]}
        assert beta.get("/v1/responses", params={"after": ids[0]}).status_code == 400


def test_images_ls(server: Server) -> None:
    assert "default" in cove(server, "images", "ls").stdout


def test_the_server_never_loads_the_sdk() -> None:
    """``cove serve`` is the same program as the client commands, and ``from cove import Sandbox`` is lazy."""
    probe = ("import sys, cove, cove.api.app\nfrom cove.cli import app\n"
             "print(sorted(name for name in sys.modules if name.startswith('cove.sdk')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert loaded.stdout == "[]\n"


def test_responses_show_follows_a_running_response(server: Server, client: openai.OpenAI,
                                                   upstream: ScriptedUpstream, http: httpx.Client) -> None:
    waiting = "while [ ! -e /mnt/data/go ]; do sleep 0.1; done; echo released"
    upstream.script([Reply(tool_calls=[ToolCall("shell", json.dumps({"commands": [waiting]}))]),
                     Reply(text="Released and done.")])
    response = client.responses.create(model="scripted-model", input="Wait for go.", background=True,
                                       tools=[{"type": "shell", "environment": {"type": "container_auto"}}])  # type: ignore[list-item]

    def container_id() -> str | None:
        extra = client.responses.retrieve(response.id).model_extra or {}
        return extra.get("container_id")

    container = eventually(container_id, what="the response's container")
    env = {**os.environ, "COVE_BASE_URL": server.url, "COVE_API_KEY": KEYS["alpha"], "COLUMNS": "200"}
    with subprocess.Popen([COVE, "responses", "show", response.id, "--follow"], env=env, stdout=subprocess.PIPE,
                          text=True) as following:
        try:
            assert following.stdout is not None
            seen = ""
            while "$ while [ ! -e /mnt/data/go ]" not in seen:
                line = following.stdout.readline()
                assert line, f"the follow ended early: {seen}"
                seen += line
            assert "Wait for go." in seen and following.poll() is None  # live: the command still waits
            assert run(http, container, "touch /mnt/data/go")[0]["outcome"] == {"type": "exit", "exit_code": 0}
            rest = following.stdout.read()
            assert "released" in rest and "Released and done." in rest and "completed" in rest
            assert following.wait(timeout=60) == 0
        finally:
            if following.poll() is None:
                following.kill()
